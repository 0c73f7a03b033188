"""Code that reproduces the paper's experiments, one module per experiment.

  toy_figures       Sec. 5.1: Figs. 2 and 6
  table1            Sec. 5.2: the MNIST Table 1 grid, next to the paper's
  large_k           large-K log-likelihood estimates per proposal (Table 1's last rows)
  mnist_figures     Sec. 5.2: Figs. 3, 4 and 7
  pendulum_sensors  Sec. 5.3: sensor failure (Fig. 5, the RMSE table, sensor health)
  pendulum_report   its results.md: the RMSE, false-alarm and sensor-health tables
  mnist_health      sensor health on MNIST-QU / -NO (beyond the paper)
  table2            Sec. 5.4: CUB Table 2; cub_figures: Figs. 8 and 9
  health_report     false alarms, detection and ROC shared by the sensor-health reports
  curves            learning curves of any runs from their TensorBoard logs
  figures           plotting helpers shared by the figures; Fig. 5 and ROC curves
  dispatch          which of these `bin/evaluate` and `bin/plot` run for a data set
  generic           what they run for a data set without an experiment of its own
"""
