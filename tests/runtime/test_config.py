"""Config values and config files are refused in one line naming the field or the file,
before anything is built (`runtime.config`)."""
import math

import pytest

import configs
from msnvi_tf import registry
from msnvi_tf.runtime import config as config_lib

COUNTS = ("num_steps", "num_samples", "eval_num_samples", "batch_size",
          "eval_batch_size", "steps_per_call", "log_every", "eval_every",
          "checkpoint_every", "max_checkpoints", "export_num_samples", "latent_dim")
# A batch and its number of latent samples: their product has its own bound.
PER_STEP = (("batch_size", "num_samples"), ("eval_batch_size", "eval_num_samples"))
MNIST = registry.get("mnist_tb").splits


def refusal(config, split_sizes=None):
  """The message of `validate`'s ValueError, checked to be one line."""
  with pytest.raises(ValueError) as error:
    config_lib.validate(config, split_sizes)
  message = str(error.value)
  assert "\n" not in message
  return message


def toy(**fields):
  config = configs.get_config("toy")
  config.update(fields)
  return config


def mnist(**fields):
  config = configs.get_config("mnist_tb")
  config.update(fields)
  return config


def all_configs():
  """(name, variant) of every data set's paper config and named variants."""
  for name in registry.names():
    yield name, "paper"
    for variant in registry.get(name).variants:
      yield name, variant


@pytest.mark.parametrize("name,variant", list(all_configs()))
def test_every_default_config_and_variant_is_valid(name, variant):
  config_lib.validate(configs.get_config(name, variant), registry.get(name).splits)


@pytest.mark.parametrize("field", COUNTS)
@pytest.mark.parametrize("value", [0, -5, 1_000_000_001, 10**20, True, 2.0, "3", None])
def test_nonpositive_huge_or_nonint_counts_are_refused_with_the_field_named(field, value):
  message = refusal(toy(**{field: value}))
  assert message == (f"{field} must be an integer from 1 to 1,000,000,000, "
                     f"got {value!r}.")


@pytest.mark.parametrize("field", COUNTS)
@pytest.mark.parametrize("value", [1, 1_000_000_000])
def test_counts_at_the_limits_are_accepted(field, value):
  partner = {a: b for pair in PER_STEP for a, b in (pair, pair[::-1])}.get(field)
  if partner and value > 1:  # the largest that batch x K allows
    config_lib.validate(toy(**{field: config_lib.MAX_SAMPLES_PER_STEP, partner: 1}))
  else:
    config_lib.validate(toy(**{field: value}))


@pytest.mark.parametrize("batch,samples", PER_STEP)
def test_a_batch_times_its_latent_samples_is_bounded_naming_both(batch, samples):
  # batch_size=1e9 overflowed TensorFlow's int32 shapes, 1e7 the machine's memory.
  limit = config_lib.MAX_SAMPLES_PER_STEP
  config_lib.validate(toy(**{batch: limit // 8, samples: 8}))
  assert refusal(toy(**{batch: 1_000_000_000, samples: 8})) == (
      f"{batch} x {samples} must be at most 1,048,576 latent samples per step, got "
      f"1,000,000,000 x 8; lower {batch} or {samples}.")
  assert refusal(toy(**{batch: 4, samples: limit // 4 + 1})).startswith(
      f"{batch} x {samples} must be at most ")


def test_precision_must_be_a_dtype_policy():
  assert refusal(toy(precision="float64")) == (
      "precision must be one of 'auto', 'float32', 'mixed_float16', 'mixed_bfloat16', "
      "got 'float64'.")
  for precision in ("auto", "float32", "mixed_float16", "mixed_bfloat16"):
    config_lib.validate(toy(precision=precision))


@pytest.mark.parametrize("field", ["learning_rate", "min_scale", "decoder_init_scale"])
@pytest.mark.parametrize("value", [0.0, -1e-4, math.nan, math.inf, -math.inf, "1e-3"])
def test_rates_and_scales_must_be_positive_finite_numbers(field, value):
  assert refusal(toy(**{field: value})) == (
      f"{field} must be a positive finite number, got {value!r}.")
  config_lib.validate(toy(**{field: 1e-30}))
  config_lib.validate(toy(**{field: 3}))


def test_a_bool_for_a_number_is_refused_on_the_command_line():
  # In Python, ml_collections casts True to 1.0 on assignment to a float field.
  with pytest.raises(ValueError, match="learning_rate must be of type float"):
    configs.get_config("toy").override(["learning_rate=True"])


@pytest.mark.parametrize("field", ["beta1", "beta2", "conflict_false_alarm_rate"])
@pytest.mark.parametrize("value", [1.0, 1.5, -0.1, math.nan])
def test_adam_betas_and_alarm_rate_must_be_in_zero_to_one_excluded(field, value):
  assert refusal(toy(**{field: value})).startswith(f"{field} must be a number >= 0 and < 1")
  config_lib.validate(toy(**{field: 0.0}))
  config_lib.validate(toy(**{field: 0.9999}))


@pytest.mark.parametrize("field", ["hybrid_weight", "final_lr_fraction", "flip_prob"])
@pytest.mark.parametrize("value", [-0.01, 1.01, math.nan, math.inf, "0.5"])
def test_weights_and_fractions_must_be_in_zero_to_one(field, value):
  assert refusal(mnist(**{field: value}), MNIST) == (
      f"{field} must be a number from 0 to 1, got {value!r}.")
  config_lib.validate(mnist(**{field: 0}), MNIST)
  config_lib.validate(mnist(**{field: 1.0}), MNIST)


@pytest.mark.parametrize("field", ["seed", "eval_seed"])
@pytest.mark.parametrize("value", [-1, 1.5, True, 2**31])
def test_seeds_must_be_nonnegative_integers(field, value):
  assert refusal(mnist(**{field: value}), MNIST).startswith(
      f"{field} must be an integer from 0 to ")
  config_lib.validate(mnist(**{field: 0}), MNIST)


@pytest.mark.parametrize("field", ["warmup_steps", "decay_steps"])
def test_schedule_steps_may_be_zero_but_not_negative(field):
  config_lib.validate(toy(**{field: 0}))
  assert refusal(toy(**{field: -1})).startswith(f"{field} must be an integer from 0 to ")


def test_cosine_decay_needs_at_least_one_decay_step():
  message = refusal(toy(lr_schedule="warmup_cosine", decay_steps=0))
  assert message.startswith("decay_steps must be an integer from 1 ")
  assert "warmup_cosine" in message
  config_lib.validate(toy(lr_schedule="warmup_cosine", decay_steps=1))


@pytest.mark.parametrize("field,value,bound", [
    ("eval_size", 10_001, "10,000 (the test set of mnist_tb)"),
    ("train_size", 60_001, "60,000 (the training set of mnist_tb)"),
    ("eval_size", -1, "10,000 (the test set of mnist_tb)"),
])
def test_real_data_sizes_beyond_the_split_are_refused_naming_the_data_set(field, value, bound):
  config = configs.get_config("mnist_tb").override([f"{field}={value}"])
  assert refusal(config, MNIST) == (
      f"{field} must be an integer from 0 (all) to {bound}, got {value}.")


def test_real_data_sizes_from_zero_all_to_the_split_are_accepted():
  for sizes in (["train_size=0", "eval_size=0"], ["train_size=60000", "eval_size=10000"]):
    config_lib.validate(configs.get_config("mnist_no").override(sizes), MNIST)
  config_lib.validate(configs.get_config("cub"), registry.get("cub").splits)
  refusal(configs.get_config("cub").override(["eval_size=3034"]), registry.get("cub").splits)


@pytest.mark.parametrize("name", ["toy", "pendulum", "shapes"])
def test_synthetic_data_sizes_must_be_positive(name):
  assert registry.get(name).splits is None
  for field in ("train_size", "eval_size"):
    config = configs.get_config(name).override([f"{field}=0"])
    assert refusal(config).startswith(f"{field} must be an integer from 1 to ")
  config_lib.validate(configs.get_config(name).override(["train_size=1", "eval_size=1"]))


def test_only_fields_the_config_has_are_checked():
  config_lib.validate({})
  config_lib.validate({"num_steps": 5, "unrelated": -1})


def test_unknown_override_key_is_one_line_with_close_matches():
  config = configs.get_config("toy")
  with pytest.raises(ValueError) as error:
    config.override(["num_sample=4"])
  message = str(error.value)
  assert "\n" not in message and len(message) < 200
  assert message.startswith("Unknown config field 'num_sample'")
  assert "did you mean 'num_samples'" in message
  with pytest.raises(ValueError, match=r"^Unknown config field 'nosuchkey'[^\n]*$"):
    config.override(["nosuchkey=1"])


@pytest.mark.parametrize("assignment,field", [
    ("num_samples=abc", "num_samples"), ("num_samples=1.5", "num_samples"),
    ("learning_rate=abc", "learning_rate"), ("hidden=3", "hidden")])
def test_override_of_the_wrong_type_is_one_line_naming_the_field(assignment, field):
  with pytest.raises(ValueError, match=rf"^{field} must be of type [^\n]*$"):
    configs.get_config("toy").override([assignment])


def test_nan_and_inf_overrides_parse_and_are_refused_by_validate():
  config = configs.get_config("toy").override(["learning_rate=nan"])
  assert refusal(config) == "learning_rate must be a positive finite number, got nan."
  config = configs.get_config("toy").override(["min_scale=inf"])
  assert refusal(config) == "min_scale must be a positive finite number, got inf."


def test_every_builtin_config_holds_every_field_training_reads():
  for name in registry.names():
    missing = set(config_lib.FIELDS) - set(configs.get_config(name))
    assert not missing, (name, missing)


def test_a_config_without_a_required_field_names_it():
  fields = {k: v for k, v in configs.get_config("toy").items() if k != "num_steps"}
  with pytest.raises(ValueError, match=r"lacks field\(s\) \['num_steps'\] that training reads"):
    config_lib.make_config(**fields)
  assert config_lib.make_config(**fields, num_steps=5).num_steps == 5


@pytest.mark.parametrize("text,spec,message", [
    (None, "", r"no such file \(/.*/c\.py\)\.$"),
    ("def get_config(:\n", "", r"running the file raised SyntaxError: .*\(.*c\.py, line 1\); "
     "fix the file\.$"),
    ("raise KeyError('x')\n", "", r"running the file raised KeyError: 'x' \(.*c\.py, line 1\)"),
    ("def get_config():\n  return 1 / 0\n", "", r"get_config\(\) raised ZeroDivisionError: "
     r"division by zero \(.*c\.py, line 2\); fix the file or the argument after ':'\.$"),
    ("def get_config():\n  return {}\n", ":mnist", r"get_config\('mnist'\) raised TypeError"),
    ("x = 1\n", "", r"the file defines no get_config\(\) \(configs/toy\.py has one\)\.$"),
    ("def get_config():\n  pass\n", "", r"get_config\(\) returned a NoneType, not a "
     r"ConfigDict; return msnvi_tf\.runtime\.config\.make_config\(\.\.\.\)"),
    ("import ml_collections\ndef get_config():\n  return ml_collections.ConfigDict("
     "{'dataset': 'toy', 'objective': 'ind'})\n", "",
     r"The config lacks field\(s\) \['latent_dim', 'num_samples', 'eval_num_samples', "
     r"'batch_size', 'learning_rate', 'num_steps'\] that training reads "
     r"\(msnvi_tf\.runtime\.config\.FIELDS documents them\)\.$"),
])
def test_a_config_file_that_cannot_be_used_is_one_line_naming_it(tmp_path, text, spec, message):
  path = tmp_path / "c.py"
  if text is not None:
    path.write_text(text)
  with pytest.raises(ValueError, match=rf"^--config={path}{spec}: {message}") as error:
    config_lib.load_file(f"{path}{spec}")
  assert "\n" not in str(error.value)


def test_a_config_file_may_return_a_dict_and_gets_the_defaults(tmp_path):
  fields = {k: v for k, v in configs.get_config("toy").items() if k != "jit_compile"}
  (tmp_path / "c.py").write_text(f"def get_config(steps):\n  return {fields!r} | "
                                 "{'num_steps': int(steps)}\n")
  config = config_lib.load_file(f"{tmp_path / 'c.py'}:7")
  assert config.num_steps == 7 and config.jit_compile == "auto"  # FIELDS' default


def test_every_field_of_every_builtin_config_is_declared_once():
  for name, variant in all_configs():
    config = configs.get_config(name, variant)
    undeclared = set(config) - set(config.declarations)
    assert not undeclared, (name, variant, undeclared)
    for field in config.declarations.values():
      assert field.doc and field.resume in (
          config_lib.FIXED, config_lib.MAY_CHANGE, config_lib.NUMERICS)


def test_a_data_sets_declared_fields_are_validated_and_kept_through_copies(tmp_path):
  config = configs.get_config("mnist_no").override(["flip_prob=0.1"])
  assert config_lib.Config(config).declarations["flip_prob"].rule == config_lib.UNIT
  assert refusal(config.copy().override(["flip_prob=1.5"]), MNIST).startswith("flip_prob")
  assert "flip_prob" not in configs.get_config("toy").declarations
  (tmp_path / "c.py").write_text("import configs\ndef get_config(variant):\n"
                                 "  return configs.get_config(variant)\n")
  loaded = config_lib.load_file(f"{tmp_path / 'c.py'}:mnist_qu")
  assert loaded.declarations["tfds_data_dir"].resume == config_lib.MAY_CHANGE


def test_a_data_set_may_not_redeclare_a_common_field_differently():
  with pytest.raises(ValueError, match=r"declares \['seed'\] again"):
    config_lib.make_config({"seed": config_lib.Field(1, "another seed")},
                           **configs.get_config("toy"))


def test_a_plugin_config_names_only_what_has_no_default():
  # The loop (steps_per_call, log_every, eval_every, checkpoint_every,
  # eval_batch_size), data and hardware fields all have defaults.
  config = config_lib.make_config(
      {"hidden": config_lib.Field((32, 32), "widths of the dense stems")},
      dataset="mine", objective="ind", latent_dim=2, num_samples=8,
      eval_num_samples=8, batch_size=32, learning_rate=1e-4, num_steps=1_000,
      train_size=100, eval_size=100)
  config_lib.validate(config)
  assert (config.steps_per_call, config.log_every, config.eval_every,
          config.checkpoint_every, config.eval_batch_size, config.hidden) == (
              100, 1_000, 5_000, 5_000, 500, (32, 32))


def test_runtime_and_numerics_fields_derive_from_the_declarations():
  from msnvi_tf.runtime import workdir  # pylint: disable=g-import-not-at-top
  assert workdir.NUMERICS_FIELDS == ("precision", "jit_compile", "intra_op_threads")
  assert workdir.runtime_fields(configs.get_config("mnist_tb")) == {
      "num_steps", "steps_per_call", "log_every", "eval_every", "checkpoint_every",
      "eval_batch_size", "max_checkpoints", "data_dir", "precision", "jit_compile",
      "export_num_samples", "eval_num_samples", "learning_rate", "distribute",
      "tfds_data_dir", "intra_op_threads", "conflict_false_alarm_rate",
      "dataset_module", "divergence_tolerance"}
  assert workdir.runtime_fields(configs.get_config("cub")) - workdir.runtime_fields(
      configs.get_config("toy")) == {"archive_dir"}


def test_an_old_workdir_gets_the_defaults_of_fields_declared_since(tmp_path):
  from msnvi_tf.runtime import workdir  # pylint: disable=g-import-not-at-top
  config = configs.get_config("mnist_no")
  old = {k: v for k, v in config.to_dict().items()
         if k not in ("missing_rate", "divergence_tolerance", "flip_prob", "data_source")}
  workdir.write_json(str(tmp_path / "config.json"), old)
  workdir.prepare(config, str(tmp_path))  # resumes: nothing it lacks differs
  loaded = workdir.load_config(str(tmp_path))
  assert loaded.to_json() == config.to_json()  # (tuples are JSON lists)
  assert loaded.declarations == config.declarations
  with pytest.raises(ValueError, match=r"flip_prob: 0\.05 -> 0\.1"):
    workdir.prepare(config.override(["flip_prob=0.1"]), str(tmp_path))
  workdir.prepare(config.override(["tfds_data_dir='/elsewhere'", "num_steps=9"]),
                  str(tmp_path))
