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


def logit_adjusted_ce(logits, labels, mask, log_prior):
  """Eq. (6): CE(f(x) + tau * log p_k(y), y) with tau = 1 (REF); log_prior = log(p_k + 1e-12)
  from the client's whole local label histogram (`data.clients.ClientData.logit_adjustment`)."""
  return masked_mean_ce(logits + log_prior, labels, mask)

