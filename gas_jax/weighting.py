"""Weight tags s(n) of the activations in the per-label statistics (paper eq. 11-12, spec §1.6).

`weighting.fn`:
- "ref": REF's client weight counter (spec §1.6; about quadratic in the training progress);
- "linear": s(n) = n, the paper's default, with the paper's n = tE + e, the activation's own
  training progress (t: aggregations before its client's model was dispatched, e = 1..E its
  local step; `system.scheduler.Event.progress`);
- "exp": s(n) = a e^{bn};  "poly": s(n) = a n^b.

The statistics are weighted means and covariances, so multiplying every weight ever merged by
one constant changes neither mu_y nor Sigma_y (REF's jitter decays by W_y / W', a ratio too).
"exp" and "poly" overflow float32 long before the paper's T (e^{bn} at n = 89 for b = 1), so
they are used *relative to the largest tag so far*: the host takes R = max log s(n) so far in
float64 (`tag`) and sends each activation's s(n) / e^R together with the increase of R at that
step; at the server update the buffer's tags and the stored weights are brought to the newest R
(`window_weights`, `rescale_stats`). Only a's and the common scale cancel: the statistics
equal those of the absolute tags up to float32 rounding (`tests/algorithms/test_weighting.py`).
Two limits keep this finite: a row whose relative weight is below `MIN_WEIGHT` (more than 69
nats below the newest activation) is left out of the statistics (its share of W_y would be below
1e-30), and a stored W_y is never scaled below `MIN_WEIGHT` (a label unseen for that long keeps
a negligible but non-zero weight, so its covariance stays defined).
"""
import math

import jax
import jax.numpy as jnp

from gas_jax.errors import ConfigError

FUNCTIONS = ("ref", "linear", "exp", "poly")
RELATIVE = ("exp", "poly")     # used relative to the running maximum
MIN_WEIGHT = 1e-30


def log_tag(fn: str, a: float, b: float, n: int) -> float:
  """log s(n) in float64 for the paper's functions (n >= 1)."""
  if fn == "linear":
    return math.log(n)
  if fn == "exp":
    return math.log(a) + b * n
  if fn == "poly":
    return math.log(a) + b * math.log(n)
  raise ConfigError(f"weighting.fn={fn!r} has no log form")


def tag(config, ev):
  """(tag, shift) of a scheduler event for the activation buffer.

  "ref" and "linear": the absolute tag (`counter_tag`, or n = `progress`) and shift 0; both stay
  far inside float32's range for every T in the paper. "exp"/"poly" (increasing in n, b >= 0):
  tag = s(n) / s(N) with N = `max_progress`, the largest n so far (this step included), and
  shift = log s(N) - log s(N_prev), how much the reference grew at this step (N_prev =
  `prev_max_progress`, 0 before the first step). A function of the event alone, so replaying
  or restoring events gives the same tags."""
  w = config.weighting
  if w.fn == "ref":
    return float(ev.counter_tag), 0.0
  if w.fn == "linear":
    return float(ev.progress), 0.0
  ref = log_tag(w.fn, w.a, w.b, ev.max_progress)
  shift = 0.0 if ev.prev_max_progress < 1 else ref - log_tag(w.fn, w.a, w.b,
                                                             ev.prev_max_progress)
  return math.exp(log_tag(w.fn, w.a, w.b, ev.progress) - ref), shift


def window_weights(tags: jax.Array, shifts: jax.Array):
  """Device side, at a server update: the buffer's C minibatch tags relative to the newest
  reference, and the factor that brings the stored weights to it.

  Minibatch i (buffer position = arrival order) was tagged relative to R_i; the update's
  reference is R_last = R_i + sum_{j > i} shift_j, and the stored weights are relative to
  R_last - sum_j shift_j. Tags below MIN_WEIGHT become 0 (left out of the statistics)."""
  after = jnp.cumsum(shifts[::-1])[::-1] - shifts
  rel = tags * jnp.exp(-after)
  return jnp.where(rel >= MIN_WEIGHT, rel, 0.0), jnp.exp(-jnp.sum(shifts))


def rescale_stats(stats, factor):
  """Every stored weight times `factor` (mu and Sigma unchanged): W_y, and the scatter
  S_y = W_y Sigma_y or the square-root factor's rows (G^T G = W_y (Sigma_y - r_y I)) with it.
  A seen label's W_y is not scaled below MIN_WEIGHT."""
  w = stats.weight
  per_label = jnp.where(w > 0, jnp.maximum(factor, MIN_WEIGHT / jnp.where(w > 0, w, 1.0)), 1.0)
  per_label = per_label.astype(w.dtype)
  new = dict(weight=w * per_label)
  if hasattr(stats, "scatter"):
    new["scatter"] = stats.scatter * per_label[:, None, None]
  if hasattr(stats, "rows"):
    new["rows"] = stats.rows * jnp.sqrt(per_label)[:, None, None]
  return stats.replace(**new)
