"""A linear-Gaussian multi-source model with exact posteriors and marginals (test helper).

z ~ N(0, I_Dz); source m observes x_m = a_m * z + b_m + sigma_m * eps_m with
eps_m ~ N(0, I_Dz) and elementwise products. Each latent dimension d is a priori
independent and observed only through dimension d of every source, so every
posterior p(z | x_S) is a diagonal Gaussian, and the marginal p(x_S) factorises
over d into |S|-variate Gaussians N(b_{S,d}, a_{S,d} a_{S,d}^T + diag(sigma_{S,d}^2)).

Everything here is computed independently of msnvi_tf: posteriors and marginals
in float64 numpy, the log joint as a TF closure in the shape convention of
`msnvi_tf.core.objectives` (z `[..., B, Dz]` -> `[..., B]`).
"""
import math

import numpy as np
import tensorflow as tf

LOG_2PI = math.log(2. * math.pi)


class LinearGaussian:
  """Random parameters a, b, sigma of shape `[M, Dz]`, drawn from `seed`."""

  def __init__(self, num_sources, latent_dim, seed):
    rng = np.random.default_rng(seed)
    shape = (num_sources, latent_dim)
    self.a = rng.uniform(0.5, 2., shape) * rng.choice([-1., 1.], shape)
    self.b = rng.normal(0., 1., shape)
    self.sigma = rng.uniform(0.4, 1.2, shape)
    self.num_sources = num_sources
    self.latent_dim = latent_dim

  def _sources(self, sources):
    return list(range(self.num_sources)) if sources is None else list(sources)

  def sample(self, num, seed):
    """Observations `[M, B, Dz]` float64 of `num` draws of z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(num, self.latent_dim))
    noise = rng.normal(size=(self.num_sources, num, self.latent_dim))
    return self.a[:, None] * z + self.b[:, None] + self.sigma[:, None] * noise

  def posterior(self, x, sources=None):
    """Exact p(z | x_S) as `(loc, scale)`, each `[B, Dz]` float64."""
    s = self._sources(sources)
    a, b, var = self.a[s][:, None], self.b[s][:, None], self.sigma[s][:, None] ** 2
    precision = 1. + np.sum(a ** 2 / var, 0)  # [1, Dz]
    eta = np.sum(a * (x[s] - b) / var, 0)  # [B, Dz]
    return eta / precision, np.broadcast_to(precision ** -0.5, eta.shape)

  def log_marginal(self, x, sources=None):
    """Exact ln p(x_S), `[B]` float64, from the |S|-variate Gaussian of each dim."""
    s = self._sources(sources)
    total = np.zeros(x.shape[1])
    for d in range(self.latent_dim):
      a = self.a[s, d]
      cov = np.outer(a, a) + np.diag(self.sigma[s, d] ** 2)  # [S, S]
      resid = (x[s, :, d] - self.b[s, d][:, None]).T  # [B, S]
      _, logdet = np.linalg.slogdet(cov)
      maha = np.sum(resid * np.linalg.solve(cov, resid.T).T, -1)  # [B]
      total += -0.5 * (maha + logdet + len(s) * LOG_2PI)
    return total

  def log_joint(self, x, sources=None):
    """Closure z `[..., B, Dz]` -> ln p(x_S, z) `[..., B]` (float32 TF)."""
    s = self._sources(sources)
    x = tf.constant(x[s], tf.float32)  # [S, B, Dz]
    a = tf.constant(self.a[s][:, None], tf.float32)  # [S, 1, Dz]
    b = tf.constant(self.b[s][:, None], tf.float32)
    sigma = tf.constant(self.sigma[s][:, None], tf.float32)

    def log_joint(z):
      z = tf.cast(z, tf.float32)[..., None, :, :]  # [..., 1, B, Dz]
      resid = (x - a * z - b) / sigma  # [..., S, B, Dz]
      log_lik = -0.5 * tf.reduce_sum(
          tf.square(resid) + 2. * tf.math.log(sigma) + LOG_2PI, [-3, -1])
      log_prior = -0.5 * tf.reduce_sum(tf.square(z[..., 0, :, :]) + LOG_2PI, -1)
      return log_lik + log_prior

    return log_joint
