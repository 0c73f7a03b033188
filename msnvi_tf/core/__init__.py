"""The paper's maths, no I/O: beliefs, likelihoods, integration, conflict, objectives, model.

  beliefs       encoders and their Gaussian beliefs q_m(z | x_m)
  likelihoods   decoders and likelihood heads p(x_t | z)
  kernels       the heads' log-probabilities with hand-written gradients, XLA-fused
  integration   PoE (Eq. 3, App. C) / MoE (App. B) of any subset of beliefs, PMI (App. D)
  conflict      the conflict measure c(m || m') of Eq. (2)
  robust        conflict-aware PoE, per-source scores and alarms (beyond the paper)
  calibration   conflict thresholds from healthy data; monitor: the same for streams
  objectives    L_ind (Eq. 1), L_MoE (App. B), L_PoE (Eq. 4), L_hybrid (Eq. 5), IWAE
  estimators    the one chunked ln (1/K) sum_k w_k estimator, the predictive mean of
                Eq. (6) and the seeding convention
  imputation    Eq. (6) and the Markov chain of Rezende et al. (2014)
  model         MultiSourceVAE (Keras 3 model with custom train / test steps)
  queries       its post-training queries: prediction, conflict, PMI, SIR, ln p(x)
"""
