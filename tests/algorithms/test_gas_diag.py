"""Diagonal statistics (Table 5, `stats.covariance="diag"`) with generation on, through the GAS
server update, against float64 numpy.

`stats.diag_rule="ref"` (default): REF's commented-out diagonal variant (spec §3.5) - once every
label has statistics each label has exactly B rows: its first B real rows in buffer order, topped
up with mu + sqrt(var + r + 1e-5) eps. "topup": the full-covariance rule (labels with more than B
real rows keep them all, mu + sqrt(var + r) eps). The server batch is read back with
`keep_last_batch`; the generated rows are pooled over the update that establishes the statistics
and three updates whose buffers are empty (all rows masked: nothing merged, the statistics stay
exactly as they were, every label gets B generated rows).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import gas_toys
from gas_jax import config as config_lib
from gas_jax.algorithms import gas

C, B, M = 2, 128, gas_toys.M
D = 256          # cnn_small on 4x4x1: activation 2x2x64
DEAD = np.arange(0, D, 16)   # dimensions constant within each label: variance exactly 0
REPEATS = 3      # empty-buffer updates after the one that completes the statistics
Z_MAX = 5.0      # |z| bound of a standard normal over ~10^3 dimensions (P ~ 6e-7 each)


def _buffer(rng, counts, tags, means, scales):
  """C*B rows: counts[y] rows of label y in a shuffled order, N(means[y], scales[y]^2) per
  dimension, DEAD dimensions constant (means[y])."""
  labels = rng.permutation(np.repeat(np.arange(M), counts))
  x = means[labels] + scales[labels] * rng.normal(size=(C * B, D))
  x[:, DEAD] = means[labels][:, DEAD]
  return labels, x.astype(np.float32), np.asarray(tags, np.float32)


def _as_buffer(labels, x, tags, mask=None):
  mask = np.ones(C * B, bool) if mask is None else mask
  return gas.ActivationBuffer(acts=jnp.asarray(x.reshape(C, B, D)),
                              labels=jnp.asarray(labels.reshape(C, B), jnp.int32),
                              row_mask=jnp.asarray(mask.reshape(C, B)),
                              tags=jnp.asarray(tags))


def _reference(batches):
  """float64: per label the tag-weighted mean and per-dimension (biased) variance of every
  real row, and REF's jitter (+1e-5 on each merge after the first, decayed by W / W')."""
  mean, var, r, w_tot = np.zeros((M, D)), np.zeros((M, D)), np.zeros(M), np.zeros(M)
  for labels, _, tags in batches:
    w = np.repeat(tags, B)
    for y in range(M):
      wb = w[labels == y].sum()
      if wb > 0:
        r[y] = w_tot[y] / (w_tot[y] + wb) * r[y] + (1e-5 if w_tot[y] > 0 else 0.0)
        w_tot[y] += wb
  labels = np.concatenate([b[0] for b in batches])
  x = np.concatenate([b[1] for b in batches]).astype(np.float64)
  w = np.concatenate([np.repeat(b[2], B) for b in batches])
  for y in range(M):
    sel = labels == y
    mean[y] = np.average(x[sel], axis=0, weights=w[sel])
    var[y] = np.average((x[sel] - mean[y]) ** 2, axis=0, weights=w[sel])
  return mean, var, r


@pytest.mark.parametrize("rule", ["ref", "topup"])
def test_diag_generation_rows_labels_and_moments(rule):
  algo = gas.build(gas_toys.model(), gas.GasHParams(
      participating=C, batch_size=B, num_classes=M, stats_covariance="diag",
      stats_diag_rule=rule, keep_last_batch=True))
  state = algo.init(jax.random.key(0))
  step = jax.jit(algo.server_step)
  rng = np.random.default_rng(0)
  means = rng.normal(size=(M, D)) * 2.0
  scales = 10.0 ** rng.uniform(-1.0, 0.5, size=(M, D))

  # Update 1: labels 0 and 1 only (label 0 has more than B rows): no generation yet, and
  # no truncation either (REF truncates only while generating).
  first = _buffer(rng, [150, 106, 0], [1.0, 2.0], means, scales)
  ss, out = step(state.server, dict(buffer=_as_buffer(*first), global_iter=0), jax.random.key(0))
  x, y, valid = (np.asarray(a) for a in ss.last_batch)
  assert int(out["generated"]) == 0 and not valid[C * B:].any()
  assert valid[:C * B].all()

  # Update 2 completes the statistics: n = (140, 100, 16).
  counts = np.array([140, 100, 16])
  second = _buffer(rng, counts, [1.0, 3.0], means, scales)
  ss, out = step(ss, dict(buffer=_as_buffer(*second), global_iter=0), jax.random.key(1))
  x, y, valid = (np.asarray(a, np.float64) if a.dtype == jnp.float32 else np.asarray(a)
                 for a in ss.last_batch)
  x = x.reshape(len(x), D)
  n_gen = np.maximum(0, B - counts)                       # (0, 28, 112)
  assert int(out["generated"]) == n_gen.sum()
  real_y, real_valid = y[:C * B], valid[:C * B]
  np.testing.assert_array_equal(real_y, second[0])
  if rule == "ref":   # every label's first B real rows (buffer order), no more
    rank = np.array([np.sum(second[0][:i] == lab) for i, lab in enumerate(second[0])])
    np.testing.assert_array_equal(real_valid, rank < B)
    np.testing.assert_array_equal(np.bincount(y[valid], minlength=M), [B] * M)
  else:               # all real rows; labels topped up to max(n_y, B)
    assert real_valid.all()
    np.testing.assert_array_equal(np.bincount(y[valid], minlength=M), np.maximum(counts, B))
  gen_y, gen_valid = y[C * B:], valid[C * B:]
  np.testing.assert_array_equal(np.bincount(gen_y[gen_valid], minlength=M), n_gen)
  np.testing.assert_array_equal(gen_y, np.repeat(np.arange(M), B))   # label y's block

  mean, var, r = _reference([first, second])
  st = ss.stats
  np.testing.assert_allclose(np.asarray(st.mean), mean, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(st.var), var, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(st.jitter), r, rtol=1e-5, atol=1e-12)
  np.testing.assert_array_equal(r > 0, [True, True, False])

  samples = [[x[C * B:][gen_valid & (gen_y == lab)]] for lab in range(M)]
  empty = _as_buffer(*second, mask=np.zeros(C * B, bool))
  for u in range(REPEATS):     # nothing merged: the same statistics, B samples per label
    ss, out = step(ss, dict(buffer=empty, global_iter=0), jax.random.key(2 + u))
    assert int(out["generated"]) == M * B
    gx, gy, gv = (np.asarray(a) for a in ss.last_batch)
    assert not gv[:C * B].any()
    for lab in range(M):
      samples[lab].append(gx.reshape(len(gx), D)[C * B:][gv[C * B:] & (gy[C * B:] == lab)])
  np.testing.assert_array_equal(np.asarray(ss.stats.var), np.asarray(st.var))

  eps = 1e-5 if rule == "ref" else 0.0           # REF's diagonal variant: sqrt(var + 1e-5)
  live = np.setdiff1d(np.arange(D), DEAD)
  for lab in range(M):
    s = np.concatenate(samples[lab]).astype(np.float64)
    n = len(s)
    assert n == n_gen[lab] + REPEATS * B
    v = var[lab] + r[lab] + eps                  # the sampling variance per dimension
    if v[DEAD].max() == 0.0:                     # topup, label 2 (first sight): exact means
      np.testing.assert_allclose(s[:, DEAD], np.broadcast_to(mean[lab][DEAD], (n, len(DEAD))),
                                 rtol=1e-6, atol=1e-6)
      dims = live
    else:
      dims = np.arange(D)
    # Sample mean: z = (mean_hat - mu) / sqrt(v / n) is N(0, 1) per dimension.
    z = (s[:, dims].mean(0) - mean[lab][dims]) / np.sqrt(v[dims] / n)
    assert np.abs(z).max() < Z_MAX, np.abs(z).max()
    # Sample variance: v_hat / v - 1 has standard deviation sqrt(2 / (n - 1)) per dimension;
    # its mean over the dims is an average of independent ones.
    ratio = s[:, dims].var(0, ddof=1) / v[dims]
    sd = np.sqrt(2.0 / (n - 1))
    assert np.abs(ratio - 1).max() < Z_MAX * sd * 1.5, np.abs(ratio - 1).max()
    assert abs(ratio.mean() - 1) < Z_MAX * sd / np.sqrt(len(dims)), ratio.mean()
    # The dead dimensions' variance is r + eps alone: 1e-5 (ref, label 2) vs 0 (topup).
    if lab == 2:
      dead = s[:, DEAD].var(0, ddof=1)
      if rule == "ref":
        assert abs(dead.mean() / 1e-5 - 1) < Z_MAX * sd / np.sqrt(len(DEAD))
      else:
        assert dead.max() < 1e-10


@pytest.mark.parametrize("value", ["truncate", "", None])
def test_bad_diag_rule_is_refused(value):
  from configs import digits     # noqa: PLC0415
  c = digits.get_config()
  c.stats.covariance = "diag"
  c.stats.diag_rule = value
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c)
  msg = str(e.value)
  assert msg.startswith("stats.diag_rule=") and repr(value) in msg
  assert "allowed: ref, topup" in msg


def test_diag_rule_reaches_the_algorithm():
  from configs import digits, table5_models     # noqa: PLC0415
  assert digits.get_config().stats.diag_rule == "ref"
  assert table5_models.get_config("resnet18:shard2").stats.covariance == "diag"
  c = digits.get_config()
  c.stats.diag_rule = "topup"
  assert gas.hparams_from_config(c, 10, True).stats_diag_rule == "topup"
