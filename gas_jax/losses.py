"""Losses: masked mean cross-entropy and the logit-adjusted client loss (paper eq. 6)."""
import jax.numpy as jnp
import optax


def masked_mean_ce(logits, labels, mask):
  """Mean cross-entropy over the rows where mask is true (padded rows are ignored)."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  mask = mask.astype(ce.dtype)
  return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def logit_adjusted_ce(logits, labels, mask, log_prior):
  """Eq. (6): CE(f(x) + tau * log p_k(y), y) with tau = 1 (REF); log_prior = log(p_k + 1e-12)."""
  return masked_mean_ce(logits + log_prior, labels, mask)


def log_prior(label_counts, eps=1e-12):
  """log(p_k + 1e-12) from a client's full local label counts (REF utils.py:140-158)."""
  counts = jnp.asarray(label_counts, jnp.float32)
  return jnp.log(counts / jnp.sum(counts, -1, keepdims=True) + eps)
