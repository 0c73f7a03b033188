"""How a model runs: config, training loop, workdir, hardware, optimizers, export.

  config      the config object and its validation
  training    train_and_evaluate(config, workdir)
  workdir     checkpoints, resume, config.json, loading a trained model
  hardware    dtype policy, threads, XLA, distribution strategy
  optimizers  Adam and the learning-rate schedules
  export      SavedModel with named serving signatures
  console     what bin/ scripts print: TensorFlow's log filtered off, --help exits 0
"""
