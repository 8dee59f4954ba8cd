"""Weight tags s(n) (paper eq. 11-12, spec §1.6; gas_jax/weighting.py).

"exp"/"poly" tags are sent relative to the largest tag so far and the stored weights are brought
to each new reference at the server update. The statistics must equal those of the absolute
tags (checked where the absolute tags fit in float32) and a float64 weighted mean/covariance
(also where they do not).
"""
import math
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import gas_jax.models  # noqa: F401
from gas_jax import stats as stats_lib
from gas_jax import weighting
from gas_jax.algorithms import gas
from gas_jax.models.registry import get_model

C, B, M = 3, 4, 3


@pytest.fixture(scope="module")
def model():
  return get_model("cnn_small", "default", M, (8, 8, 1))


def _config(fn, a=1.0, b=1.0):
  c = ml_collections.ConfigDict()
  c.weighting = ml_collections.ConfigDict(dict(fn=fn, a=a, b=b))
  return c


def _events(progress):
  """Scheduler-like events with the running maximum of `progress` (as GasScheduler keeps)."""
  out, top = [], 0
  for i, n in enumerate(progress):
    out.append(types.SimpleNamespace(progress=int(n), counter_tag=i + 1, prev_max_progress=top,
                                     max_progress=max(top, int(n))))
    top = max(top, int(n))
  return out


def _stream(windows, seed, stale=8, step=5):
  """Per window: C minibatches' progress (within `stale` of the newest), labels, rows."""
  rng = np.random.default_rng(seed)
  progress = np.concatenate([step * w + 1 + rng.integers(0, stale, C) for w in range(windows)])
  return (progress, rng.integers(0, M, (windows, C, B)),
          rng.normal(size=(windows, C, B, 16)) + rng.normal(size=(1, 1, 1, 16)))


def _merge_all(model, relative, tags, shifts, labels, rows, method="sqrt", jitter=0.0):
  hp = gas.GasHParams(participating=C, batch_size=B, num_classes=M, stats_method=method,
                      stats_jitter=jitter, relative_tags=relative)
  algo = gas.build(model, hp)
  st = algo.init(jax.random.key(0)).server.stats
  dim = int(np.prod(model.activation_shape))
  gen = jax.jit(lambda st, buf: algo.generate(st, buf, jax.random.key(1), 0)[0])
  for w in range(labels.shape[0]):
    acts = np.zeros((C, B, dim), np.float32)
    acts[:, :, :rows.shape[-1]] = rows[w]
    buf = gas.ActivationBuffer(
        acts=jnp.asarray(acts), labels=jnp.asarray(labels[w], jnp.int32),
        row_mask=jnp.ones((C, B), bool), tags=jnp.asarray(tags[w], jnp.float32),
        tag_shift=jnp.asarray(shifts[w], jnp.float32) if relative else None)
    st = gen(st, buf)
  d = rows.shape[-1]
  return (np.asarray(st.mean)[:, :d], np.asarray(stats_lib.covariance(st))[:, :d, :d],
          np.asarray(st.weight, np.float64))


def _reference(log_w, labels, rows):
  """float64 weighted mean / biased covariance of every row per label (eq. 11-12, no jitter),
  with weights exp(log_w - max log_w) per minibatch."""
  w = np.exp(log_w - log_w.max())
  means, covs = [], []
  for y in range(M):
    sel = labels.reshape(-1, B) == y
    x = rows.reshape(-1, B, rows.shape[-1])[sel]
    ww = np.broadcast_to(w[:, None], sel.shape)[sel]
    mu = (ww[:, None] * x).sum(0) / ww.sum()
    covs.append(((x - mu).T * ww) @ (x - mu) / ww.sum())
    means.append(mu)
  return np.stack(means), np.stack(covs)


def test_tag_is_relative_to_the_running_maximum():
  """Hand values: exp a e^{bn}: a cancels, tag = e^{b (n - N)}, shift = b (N - N_prev)."""
  ev = types.SimpleNamespace(progress=3, counter_tag=7, max_progress=5, prev_max_progress=4)
  tag, shift = weighting.tag(_config("exp", a=2.0, b=0.5), ev)
  assert tag == pytest.approx(math.exp(-1.0)) and shift == pytest.approx(0.5)
  tag, shift = weighting.tag(_config("poly", a=3.0, b=2.0), ev)
  assert tag == pytest.approx((3 / 5) ** 2) and shift == pytest.approx(2 * math.log(5 / 4))
  assert weighting.tag(_config("linear"), ev) == (3.0, 0.0)      # the paper's n, absolute
  assert weighting.tag(_config("ref"), ev) == (7.0, 0.0)         # REF's counter, absolute
  first = types.SimpleNamespace(progress=2, counter_tag=1, max_progress=2, prev_max_progress=0)
  assert weighting.tag(_config("exp", b=1.0), first) == (1.0, 0.0)


@pytest.mark.parametrize("method", ["sqrt", pytest.param("cholesky", marks=pytest.mark.slow)])
def test_relative_tags_equal_absolute_tags(model, method):
  """Where a e^{bn} fits in float32 (n <= 200, b = 0.05): the relative path gives the absolute
  path's mean and covariance (REF jitter included: it decays by W / W', a ratio), and weights
  scaled by s(N) / a."""
  windows = 30
  progress, labels, rows = _stream(windows, seed=0, step=6)
  cfg = _config("exp", a=2.0, b=0.05)
  tagged = [weighting.tag(cfg, ev) for ev in _events(progress)]
  rel = np.array([t for t, _ in tagged]).reshape(windows, C)
  shift = np.array([s for _, s in tagged]).reshape(windows, C)
  absolute = (2.0 * np.exp(0.05 * progress)).reshape(windows, C)
  assert shift.sum() > 0 and rel.min() < 0.8          # the reference moves; tags are relative
  m_abs, c_abs, w_abs = _merge_all(model, False, absolute, None, labels, rows, method, 1e-5)
  m_rel, c_rel, w_rel = _merge_all(model, True, rel, shift, labels, rows, method, 1e-5)
  np.testing.assert_allclose(m_rel, m_abs, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(c_rel, c_abs, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(w_rel * 2.0 * np.exp(0.05 * progress.max()), w_abs, rtol=1e-4)


@pytest.mark.parametrize("fn,b", [("exp", 1.0), ("poly", 1000.0)])
def test_relative_tags_match_float64_where_absolute_overflows(model, fn, b):
  """n up to ~1200 with b = 1 (e^{1200} overflows even float64) and n^1000: the statistics are
  finite and equal the float64 weighted mean/covariance computed in the log domain."""
  windows = 200
  progress, labels, rows = _stream(windows, seed=1, stale=4)
  cfg = _config(fn, b=b)
  tagged = [weighting.tag(cfg, ev) for ev in _events(progress)]
  rel = np.array([t for t, _ in tagged]).reshape(windows, C)
  shift = np.array([s for _, s in tagged]).reshape(windows, C)
  mean, cov, weight = _merge_all(model, True, rel, shift, labels, rows)
  assert np.all(np.isfinite(mean)) and np.all(np.isfinite(cov)) and np.all(weight > 0)
  log_w = np.array([weighting.log_tag(fn, 1.0, b, int(n)) for n in progress])
  want_m, want_c = _reference(log_w, labels, rows)
  np.testing.assert_allclose(mean, want_m, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(cov, want_c, rtol=1e-3, atol=1e-4)


def test_window_weights_and_rescale_by_hand():
  """Tags (1, 0.5, 1) with reference growth (0, 0, log 2): the first two are brought down by
  1/2, the stored weights by 1/2; weights below 1e-30 drop out; W never falls below 1e-30."""
  tags, factor = weighting.window_weights(jnp.array([1.0, 0.5, 1.0]),
                                          jnp.array([0.0, 0.0, math.log(2.0)]))
  np.testing.assert_allclose(np.asarray(tags), [0.5, 0.25, 1.0], rtol=1e-6)
  assert float(factor) == pytest.approx(0.5, rel=1e-6)
  tags, _ = weighting.window_weights(jnp.array([1.0, 1.0]), jnp.array([0.0, 80.0]))
  np.testing.assert_array_equal(np.asarray(tags), [0.0, 1.0])
  st = stats_lib.init_sqrt(2, 3, 4)
  st = st.replace(weight=jnp.array([4.0, 1e-20]), rows=jnp.ones((2, 4, 3)))
  out = weighting.rescale_stats(st, jnp.float32(0.25))
  np.testing.assert_allclose(np.asarray(out.weight), [1.0, 2.5e-21], rtol=1e-5)
  np.testing.assert_allclose(np.asarray(out.rows)[0], 0.5 * np.ones((4, 3)), rtol=1e-6)
  out = weighting.rescale_stats(st, jnp.float32(1e-12))
  np.testing.assert_allclose(np.asarray(out.weight), [4e-12, 1e-30], rtol=1e-5)
