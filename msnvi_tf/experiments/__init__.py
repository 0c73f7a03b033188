"""Code that reproduces the paper's experiments, one package per experiment.

  toy        Sec. 5.1: Figs. 2 and 6
  mnist      Sec. 5.2: the Table 1 grid next to the paper's, large-K estimates,
             Figs. 3, 4 and 7, sensor health on MNIST-QU / -NO (beyond the paper)
  pendulum   Sec. 5.3: sensor failure (Fig. 5, the RMSE table, sensor health)
             and the latent filter over time (beyond the paper)
  cub        Sec. 5.4: Table 2, Figs. 8 and 9 (CUB and the `shapes` stand-in)

Each package's `EXPERIMENT` (`msnvi_tf.Experiment(evaluate, plot)`) is
registered with its data sets in `msnvi_tf/__init__.py`; a user's data set
passes its own to `register_dataset(..., experiment=...)`. Shared by them:

  dispatch       runs the registered experiment of the workdirs' data set
                 (`bin/evaluate`, `bin/plot`)
  generic        the report of a data set without an experiment, and shared helpers
  curves         learning curves of any runs from their TensorBoard logs
  figures        plotting helpers shared by the figures; ROC curves
  health_report  false alarms, detection and ROC shared by the sensor-health reports
  reproduce      trains, evaluates and plots one of the paper's tables end to end
"""
