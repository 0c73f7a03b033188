"""The paper's maths, no I/O: beliefs, likelihoods, integration, conflict, objectives, model.

  beliefs       encoders and their Gaussian beliefs q_m(z | x_m)
  likelihoods   decoders and likelihood heads p(x_t | z)
  kernels       the heads' log-probabilities with hand-written gradients, XLA-fused
  integration   PoE / MoE of any subset of beliefs (Eqs. 3-5), PMI
  conflict      the conflict measure c(m || m') of Eq. (2)
  robust        conflict-aware PoE, per-source scores and alarms (beyond the paper)
  calibration   conflict thresholds from healthy data; monitor: the same for streams
  objectives    L_ind, L_MoE, L_PoE, L_hybrid, IWAE (Eqs. 7-11)
  estimators    the one chunked ln (1/K) sum_k w_k estimator and the seeding convention
  imputation    Eq. (6) and the Markov chain of Rezende et al. (2014)
  model         MultiSourceVAE (Keras 3 model with custom train / test steps)
  queries       its post-training queries: prediction, conflict, PMI, SIR, ln p(x)
"""
