"""Evaluation of the global model on the test set, and the divergence guard."""
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np


# The draw of `test_images` is fixed (not the run's seed): every method and seed of a
# comparison is scored on the same images.
EVAL_DRAW_SEED = 0


def test_images(ds, n: int):
  """(x, y) of the test images the accuracy is measured on: all of them for n = 0, else n of
  them drawn once without replacement (`EVAL_DRAW_SEED`), in their file order."""
  if not n or n >= len(ds.y_test):
    return ds.x_test, ds.y_test
  idx = np.sort(np.random.default_rng(EVAL_DRAW_SEED).permutation(len(ds.y_test))[:n])
  return ds.x_test[idx], ds.y_test[idx]


class Evaluator:
  """Accuracy and mean CE of (client, server) params over the given test images (all of them,
  or `test_images`' fixed draw), in fixed-size padded batches scanned inside one jitted call."""

  def __init__(self, model, x_test, y_test, batch_size: int):
    n = x_test.shape[0]
    bs = min(batch_size, n)
    total = -(-n // bs) * bs
    pad = total - n
    xs = np.concatenate([x_test, np.zeros((pad,) + x_test.shape[1:], x_test.dtype)])
    ys = np.concatenate([y_test, np.zeros((pad,), y_test.dtype)])
    self.n = n
    self.xs = jnp.asarray(xs.reshape((-1, bs) + x_test.shape[1:]))
    self.ys = jnp.asarray(ys.reshape(-1, bs))
    self.ms = jnp.asarray((np.arange(total) < n).reshape(-1, bs))

    def batch(params, x, y, m):
      logits = model.server_apply(params[1], model.client_apply(params[0], x))
      nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)[:, 0]
      return jnp.sum((jnp.argmax(logits, -1) == y) * m), jnp.sum(nll * m)

    @jax.jit
    def run(params, xs, ys, ms):
      return jax.lax.map(lambda b: batch(params, *b), (xs, ys, ms))

    self._run = run

  def __call__(self, params) -> Dict[str, float]:
    correct, nll = jax.device_get(self._run(params, self.xs, self.ys, self.ms))
    return dict(test_accuracy=float(np.sum(correct)) / self.n,
                test_loss=float(np.sum(nll)) / self.n)


@jax.jit
def all_finite(tree):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def finite_check(iteration: int, **values) -> None:
  """Divergence guard: raises naming the global iteration and every non-finite quantity
  (values are numbers, or booleans that say "finite")."""
  def ok(v):
    v = np.asarray(v)
    return bool(np.all(v)) if v.dtype == bool else bool(np.all(np.isfinite(v.astype(float))))
  bad = [name.replace("_", " ") for name, v in values.items() if not ok(v)]
  if bad:
    raise FloatingPointError(f"non-finite {', '.join(bad)} at global iteration {iteration}")
