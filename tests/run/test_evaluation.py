"""Test accuracy is measured by one shared evaluator, on the same test images for every method.

`eval_examples` (N test images, one fixed draw; 0 = all of them) changes what every method is
scored on through `evaluation.test_images`, which train_and_evaluate calls for every method.
"""
import hashlib

import numpy as np
import pytest

from configs import digits
from gas_jax import evaluation, train
from gas_jax.data import sources
from gas_jax.registry import ALGORITHMS

N = 60


def _digest(a) -> str:
  return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_test_images_is_one_fixed_draw():
  ds = sources.load_dataset("digits", None)
  x, y = evaluation.test_images(ds, N)
  assert x.shape == (N,) + ds.x_test.shape[1:] and y.shape == (N,)
  # N distinct test images, in file order, the same on every call.
  idx = [int(np.flatnonzero((ds.x_test == xi).all(axis=(1, 2, 3)))[0]) for xi in x]
  assert idx == sorted(set(idx)) and len(idx) == N
  np.testing.assert_array_equal(y, ds.y_test[idx])
  x2, _ = evaluation.test_images(ds, N)
  np.testing.assert_array_equal(x, x2)
  # A draw, not the first N images; 0 (or every image) means the whole split.
  assert idx != list(range(N))
  for n in (0, len(ds.y_test)):
    xa, ya = evaluation.test_images(ds, n)
    assert xa is ds.x_test and ya is ds.y_test


# One method per runner in the default suite, the others in the slow set.
METHODS = [m if m in ("gas", "fedbuff", "minibatch_sfl")
           else pytest.param(m, marks=pytest.mark.slow) for m in ALGORITHMS.names()]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_is_scored_on_the_same_images(method, tmp_path, monkeypatch):
  seen = []
  orig = evaluation.Evaluator.__init__

  def recording(self, model, x_test, y_test, batch_size):
    seen.append((_digest(x_test), _digest(y_test), len(y_test)))
    orig(self, model, x_test, y_test, batch_size)

  monkeypatch.setattr(evaluation.Evaluator, "__init__", recording)
  c = digits.get_config()
  c.algorithm, c.eval_examples, c.num_global_iters = method, N, 1
  c.clients.num, c.clients.participating, c.clients.local_iters = 5, 2, 2
  summary = train.train_and_evaluate(c, str(tmp_path))
  x, y = evaluation.test_images(sources.load_dataset("digits", None), N)
  assert seen == [(_digest(x), _digest(y), N)]
  acc = summary["final_accuracy"] * N
  assert abs(acc - round(acc)) < 1e-6      # a count out of N, not out of the 360 test images
