"""msnvi_tf: Multi-Source Neural Variational Inference (Kurle et al., AAAI 2019).

Modules, one idea each:
  beliefs       encoders and their Gaussian beliefs q_m(z | x_m)
  integration   PoE / MoE of any subset of beliefs, PMI
  conflict      the conflict measure c(m || m') of Eq. (2)
  robust        conflict-aware PoE, per-source scores and alarms (beyond the paper)
  calibration   conflict thresholds from healthy data; monitor: the same for streams
  likelihoods   decoders and their likelihood heads p(x_t | z)
  objectives    L_ind, L_MoE, L_PoE, L_hybrid, IWAE
  model         MultiSourceVAE (Keras 3 model with custom train/test steps)
  data, architectures   one module per data set
  training      train_and_evaluate(config, workdir)
  export        SavedModel with named serving signatures
  plots         the paper's figures
"""
from msnvi_tf.core import integration as _integration
from msnvi_tf.core import robust as _robust

__version__ = "0.1.0"

_integration.register("robust", _robust.robust)
