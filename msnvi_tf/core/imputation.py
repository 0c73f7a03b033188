"""Missing-data imputation: Eq. (6) against the Markov chain of Rezende et al. (2014).

Both methods are scored by the log-likelihood of the true missing part x_u
given the observed part x_o, estimated with L latent samples:
  Eq. (6):      ln p(x_u | x_o) ~ ln (1/L) sum_l p(x_u | z_l),  z_l ~ q_S(z | x_o),
                q_S the belief of the observed sources (their PoE if several).
  Markov chain: x_u^(0) ~ Ber(0.5); at step t, q_t = the belief of the whole
                image (x_o, x_u^(t)) (the PoE of all sources, or a hard-wired
                encoder), scored by ln (1/L) sum_l p(x_u | z_l), z_l ~ q_t; then
                x_u^(t+1) ~ p(x_u | z_1) (Fig. 4 and App. F of the paper).
"""
from typing import Dict, Mapping, Optional, Sequence, Tuple

import tensorflow as tf
import tensorflow_probability as tfp

from msnvi_tf.core import estimators

__all__ = ["predictive_log_likelihood", "markov_chain_imputation", "imputation_curves"]


def _missing_log_prob(model, x, z, missing: Sequence[str]):
  """ln p(x_u | z) = sum over the missing targets: z `[L, B, Dz]` -> `[L, B]`."""
  return tf.add_n([model.decoders[t].log_prob(z, x[t]) for t in missing])


def predictive_log_likelihood(model, x, observed: Sequence[str],
                              missing: Sequence[str], method: str = "poe",
                              num_samples: int = 100, seed: Optional[int] = 0):
  """Eq. (6): ln p(x_u | x_o) ~ ln (1/L) sum_l p(x_u | z_l), z_l ~ q_S(z | x_o).

  Args:
    model: a trained `MultiSourceVAE` with one encoder per source.
    x: batch dict holding the observed sources and the true missing targets.
    observed: the sources S that are seen.
    missing: the targets to impute.
    method: integration of the observed beliefs.
    num_samples: L.
    seed: int seed of the latent samples, None for new ones (`estimators`).

  Returns:
    `[B]` float32.
  """
  q = model.integrate(model.encode(x, observed), method)
  return estimators.log_mean_exp(
      q, lambda z: _missing_log_prob(model, x, z, missing), num_samples,
      estimators.as_seed(seed), chunk_size=num_samples)


def markov_chain_imputation(model, x, missing: Sequence[str], num_steps: int = 150,
                            num_samples: int = 100, method: str = "poe",
                            seed: Optional[int] = 0, return_means: bool = False
                            ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
  """Imputes `missing` with the Markov chain of Rezende et al. (2014).

  x_u^(0) ~ Ber(0.5); for t = 0..T: q_t = belief of (x_o, x_u^(t)) from every
  source of the model, integrated with `method` (a hard-wired IWAE encoder is
  its own belief); score ln (1/L) sum_l p(x_u | z_l), z_l ~ q_t; draw
  x_u^(t+1) ~ Ber(E[x_u | z_1]).

  Args:
    model: a trained `MultiSourceVAE` whose targets include `missing` and whose
      encoders read the whole image (every source, or one hard-wired encoder).
    x: batch dict with the observed sources and the true missing parts.
    missing: names of the missing parts (sources of the encoders and targets).
    num_steps: T, steps after the start.
    num_samples: L, latent samples of the score.
    method: integration of the beliefs of all sources.
    seed: int seed of the chain, None for a new one (`estimators`): step t
      draws with other_seed(s, t + 1), the start with other_seed(s, 0).
    return_means: also return E[x_u | z_1] of every step.

  Returns:
    `(log_lik [T + 1, B], means)`: row t is the score of x_u^(t) (row 0: the
    Ber(0.5) start); `means` is `{target: [T + 1, B, D]}` if `return_means`,
    else empty.
  """
  missing = list(missing)
  seed = estimators.as_seed(seed)
  observed = {k: v for k, v in x.items() if k not in missing}
  start = estimators.other_seed(seed, 0)
  state = {t: tf.cast(tf.random.stateless_uniform(tf.shape(x[t]), start) < 0.5,
                      tf.float32) for t in missing}  # each [B, D]

  @tf.function
  def step(state, seed):
    q = model.integrate(model.encode({**observed, **state}), method)
    z, log_p = estimators.weighted_samples(  # [L, B, Dz], [L, B]
        q, lambda z: _missing_log_prob(model, x, z, missing), num_samples, seed)
    score = tfp.math.reduce_logmeanexp(log_p, 0)  # [B]
    means = {t: model.decoders[t].mean(z[0]) for t in missing}  # [B, D]
    x_seed = estimators.other_seed(seed)
    new = {t: tf.cast(tf.random.stateless_uniform(tf.shape(m), x_seed) < m, tf.float32)
           for t, m in means.items()}
    return score, means, new

  scores, means = [], {t: [] for t in missing}
  for t in range(num_steps + 1):
    score, mean, state = step(state, estimators.other_seed(seed, t + 1))
    scores.append(score)
    if return_means:
      for name in missing:
        means[name].append(mean[name])
  means = {k: tf.stack(v) for k, v in means.items()} if return_means else {}
  return tf.stack(scores), means


def imputation_curves(model, x, observed: Sequence[str], missing: Sequence[str],
                      num_steps: int = 150, num_samples: int = 100,
                      seed: int = 0) -> Mapping[str, object]:
  """Mean scores over a batch: the chain per step and Eq. (6), as in Fig. 4.

  Returns:
    `{"chain": [T + 1] numpy, "eq6": float}`, nats per example.
  """
  chain, _ = markov_chain_imputation(model, x, missing, num_steps, num_samples,
                                     seed=seed)
  eq6 = predictive_log_likelihood(model, x, observed, missing,
                                  num_samples=num_samples, seed=seed)
  return {"chain": tf.reduce_mean(chain, -1).numpy(),
          "eq6": float(tf.reduce_mean(eq6))}
