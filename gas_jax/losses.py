"""Losses: masked mean cross-entropy and the logit-adjusted client loss (paper eq. 6)."""
import jax.numpy as jnp
import optax


def masked_mean_ce(logits, labels, mask):
  """Mean cross-entropy over the rows where mask is true (padded rows are ignored)."""
  return masked_sum_ce(logits, labels, mask) / jnp.maximum(jnp.sum(mask.astype(logits.dtype)),
                                                          1.0)


def masked_sum_ce(logits, labels, mask):
  """Sum of the cross-entropy over the rows where mask is true."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return jnp.sum(jnp.where(mask, ce, 0.0))


def logit_adjusted_ce(logits, labels, mask, log_prior, tau: float = 1.0):
  """Eq. (6): CE(f(x) + tau * log p_k(y), y) with tau = 1 (REF, the paper's eq. 6;
  `clients.la_tau`; tau = 0: plain CE); log_prior = log(p_k + 1e-12) from the client's whole
  local label histogram (`data.clients.ClientData.logit_adjustment`). tau is static: 1 and 0
  add log_prior / nothing exactly."""
  if tau == 0:
    return masked_mean_ce(logits, labels, mask)
  return masked_mean_ce(logits + (log_prior if tau == 1 else tau * log_prior), labels, mask)

