"""GAS step semantics against hand computations (spec §0, §1.3-1.8)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gas_jax.models  # noqa: F401
from gas_jax import dissimilarity, engine, losses
from gas_jax import stats as stats_lib
from gas_jax.algorithms import gas
from gas_jax.algorithms.gas import server as gas_server
from gas_jax.models.registry import get_model

C, B, M = 2, 4, 3


@pytest.fixture(scope="module")
def model():
  return get_model("cnn_small", "default", M, (8, 8, 1))


def _algo(model, **kw):
  hp = gas.GasHParams(participating=C, batch_size=B, num_classes=M, **kw)
  return gas.build(model, hp)


def _batch(state, slot, seed, upload=False, aggregate=False, agg_weight=1.0, labels=None):
  rng = np.random.default_rng(seed)
  y = np.asarray(labels if labels is not None else rng.integers(0, M, B), np.int32)
  return dict(slot=np.int32(slot), x=rng.normal(size=(B, 8, 8, 1)).astype(np.float32),
              y=y, mask=np.ones(B, bool), log_prior=np.zeros(M, np.float32),
              upload=np.bool_(upload), aggregate=np.bool_(aggregate),
              agg_weight=np.float32(agg_weight), server=state.server.server)


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
@pytest.mark.parametrize("clip", [10.0, 0.05])
def test_shared_momentum_matches_pytorch_formula(model, clip):
  """Two steps by two clients share one buffer: buf = 0.9 buf + (clip(g) + wd w); w -= lr buf,
  clip(g) = g * min(1, c / ||g||) over the client's whole gradient. REF's c = 10 is inactive
  here (||g|| ~ 0.25); c = 0.05 clips both steps."""
  algo = _algo(model, lr=0.1, clip_norm=clip)
  state = algo.init(jax.random.key(0))
  cs = state.client
  loss_fn = lambda th, b: losses.logit_adjusted_ce(   # noqa: E731
      model.server_apply(b["server"], model.client_apply(th, b["x"])), b["y"], b["mask"],
      b["log_prior"])
  b0, b1 = _batch(state, 0, 1), _batch(state, 1, 2)
  th0 = jax.tree_util.tree_map(lambda p: np.asarray(p[0], np.float64), cs.slots)
  th1 = jax.tree_util.tree_map(lambda p: np.asarray(p[1], np.float64), cs.slots)

  norms = []

  def clipped(g):
    norm = np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64)))
                       for x in jax.tree_util.tree_leaves(g)))
    norms.append(norm)
    return jax.tree_util.tree_map(lambda x: x * min(1.0, clip / norm), g)

  g0 = jax.tree_util.tree_map(np.asarray, jax.grad(loss_fn)(
      jax.tree_util.tree_map(lambda p: p[0], cs.slots), b0))
  buf = jax.tree_util.tree_map(lambda g, w: g + 5e-4 * w, clipped(g0), th0)
  exp0 = jax.tree_util.tree_map(lambda w, u: w - 0.1 * u, th0, buf)
  cs, _ = jax.jit(algo.client_step)(cs, b0, jax.random.key(1))
  g1 = jax.tree_util.tree_map(np.asarray, jax.grad(loss_fn)(
      jax.tree_util.tree_map(lambda p: p[1], cs.slots), b1))
  buf = jax.tree_util.tree_map(lambda bf, g, w: 0.9 * bf + g + 5e-4 * w, buf, clipped(g1), th1)
  exp1 = jax.tree_util.tree_map(lambda w, u: w - 0.1 * u, th1, buf)
  cs, _ = jax.jit(algo.client_step)(cs, b1, jax.random.key(1))
  chex.assert_trees_all_close(jax.tree_util.tree_map(lambda p: p[0], cs.slots), exp0,
                              rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(jax.tree_util.tree_map(lambda p: p[1], cs.slots), exp1,
                              rtol=1e-4, atol=1e-6)
  if clip < 1.0:
    assert min(norms) > 2 * clip, norms             # clipping is active on both steps
  else:
    assert max(norms) < clip, norms


def test_client_step_with_log_priors_equals_numpy(model):
  """Eq. (6) with a non-uniform prior p_k = (0.7, 0.3, 0) (label 2 absent locally: log 1e-12)
  and one padded row: the step's loss is the masked mean of CE(logits + log(p_k + 1e-12), y)
  computed in float64 numpy, its gradient is that of numpy's dL/dlogits = (softmax(logits +
  log p) - onehot(y)) / n_valid pulled back through the network (a VJP of the logits only),
  and the slot moves by -lr (g + wd w) (first step: buf = g; ||g|| < 10, no clipping)."""
  lr, wd = 0.1, 5e-4
  algo = _algo(model, lr=lr)
  state = algo.init(jax.random.key(0))
  log_prior = np.log(np.array([0.7, 0.3, 0.0]) + 1e-12).astype(np.float32)
  mask = np.array([True, True, True, False])
  batch = dict(_batch(state, 0, 5, labels=[0, 1, 2, 1]), log_prior=log_prior, mask=mask)
  theta = jax.tree_util.tree_map(lambda p: p[0], state.client.slots)
  phi = state.server.server
  logits, pull_back = jax.vjp(
      lambda th: model.server_apply(phi, model.client_apply(th, batch["x"])), theta)
  z = np.asarray(logits, np.float64) + log_prior
  log_softmax = z - np.log(np.sum(np.exp(z - z.max(1, keepdims=True)), 1, keepdims=True)) \
      - z.max(1, keepdims=True)
  y = batch["y"]
  n = mask.sum()
  want_loss = -np.sum(log_softmax[np.arange(B), y] * mask) / n
  dz = (np.exp(log_softmax) - np.eye(M)[y]) * mask[:, None] / n
  (grad,) = pull_back(jnp.asarray(dz, jnp.float32))
  norm = np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64)))
                     for g in jax.tree_util.tree_leaves(grad)))
  assert norm < 10.0
  want = jax.tree_util.tree_map(lambda w, g: np.asarray(w, np.float64)
                                - lr * (np.asarray(g, np.float64) + wd * np.asarray(w, np.float64)),
                                theta, grad)
  cs, out = jax.jit(algo.client_step)(state.client, batch, jax.random.key(1))
  np.testing.assert_allclose(float(out["client_loss"]), want_loss, rtol=1e-5)
  chex.assert_trees_all_close(jax.tree_util.tree_map(lambda p: p[0], cs.slots), want,
                              rtol=1e-4, atol=1e-7)
  # The prior matters: the row of the locally absent label alone costs ~27.6 / 3 more.
  zero_loss = -np.sum((np.asarray(logits, np.float64)
                       - np.log(np.sum(np.exp(np.asarray(logits, np.float64)), 1,
                                       keepdims=True)))[np.arange(B), y] * mask) / n
  assert want_loss - zero_loss > 5.0


@pytest.mark.parametrize("weights", [(1.0, 1.0), (30.0, 10.0)])
def test_model_buffer_aggregation(model, weights):
  """After C uploads theta_glob is the weighted mean of the uploaded models; slots restart there."""
  algo = _algo(model, lr=0.05)
  state = algo.init(jax.random.key(0))
  cs = state.client
  step = jax.jit(algo.client_step)
  cs, _ = step(cs, _batch(state, 0, 1, upload=True, agg_weight=weights[0]), jax.random.key(0))
  # After a non-aggregating upload the slot restarts from the (old) global model.
  chex.assert_trees_all_close(jax.tree_util.tree_map(lambda p: p[0], cs.slots), cs.global_client)
  up0 = jax.tree_util.tree_map(np.asarray, cs.model_sum)
  cs, _ = step(cs, _batch(state, 1, 2), jax.random.key(0))
  last = _batch(state, 1, 3, upload=True, aggregate=True, agg_weight=weights[1])
  # The same step without the upload flags shows the model that slot 1 uploads.
  no_up, _ = step(cs, dict(last, upload=np.bool_(False), aggregate=np.bool_(False)),
                  jax.random.key(0))
  theta1 = jax.tree_util.tree_map(lambda p: np.asarray(p[1], np.float64), no_up.slots)
  cs, _ = step(cs, last, jax.random.key(0))
  assert int(cs.global_iter) == 1
  w0, w1 = weights
  theta0 = jax.tree_util.tree_map(lambda a: a / w0, up0)
  expected = jax.tree_util.tree_map(lambda a, b_: (w0 * a + w1 * b_) / (w0 + w1), theta0, theta1)
  chex.assert_trees_all_close(cs.global_client, expected, rtol=1e-5, atol=1e-6)
  glob = jax.tree_util.tree_map(np.asarray, cs.global_client)
  # model_sum was reset and both slots' future start = glob
  chex.assert_trees_all_close(cs.model_sum, jax.tree_util.tree_map(np.zeros_like, glob))
  chex.assert_trees_all_close(jax.tree_util.tree_map(lambda p: p[1], cs.slots), glob)
  assert float(cs.model_weight) == 0.0


def test_generation_tops_labels_up_to_b(model):
  """generated = sum_y max(0, B - n_y) once all labels have statistics, 0 before (spec §1.5);
  the generated rows carry their labels: label y gets exactly max(0, B - n_y) of them, in the
  server batch (read back with keep_last_batch; M*B masked rows, label y's block) and in the
  packed form (`gen_rows`: labels in order), and none before every label has statistics."""
  algo = _algo(model, keep_last_batch=True)
  state = algo.init(jax.random.key(0))
  run = engine.make_server_runner(algo)
  gen = jax.jit(algo.generate, static_argnums=4)
  dim = int(np.prod(model.activation_shape))
  rng = np.random.default_rng(0)

  def buffer(labels):
    labels = np.asarray(labels, np.int32).reshape(C, B)
    return gas.ActivationBuffer(acts=jnp.asarray(rng.normal(size=(C, B, dim)), jnp.float32),
                                labels=jnp.asarray(labels), row_mask=jnp.ones((C, B), bool),
                                tags=jnp.ones((C,), jnp.float32))

  def generated_labels(ss):
    _, y, valid = (np.asarray(a) for a in ss.last_batch)
    gy, gv = y[C * B:], valid[C * B:]
    np.testing.assert_array_equal(gy, np.repeat(np.arange(M), B))
    return np.bincount(gy[gv], minlength=M)

  ss = state.server
  buf1 = buffer([0, 0, 0, 1, 1, 1, 1, 1])
  _, (_, py, pv), n, _, _ = gen(ss.stats, buf1, jax.random.key(5), ss.server_updates, 9)
  assert int(n) == 0 and not np.asarray(pv).any()
  ss, m1 = run(ss, buf1, np.int32(0), jax.random.key(0))
  assert int(m1["generated"]) == 0                     # label 2 not seen yet: no generation
  np.testing.assert_array_equal(generated_labels(ss), [0, 0, 0])
  buf2 = buffer([2, 2, 0, 0, 0, 0, 0, 0])
  before = jax.tree_util.tree_map(jnp.copy, ss.stats)
  ss, m2 = run(ss, buf2, np.int32(0), jax.random.key(0))
  # n = (6, 0, 2): max(0, 4-6) + (4-0) + (4-2) = 6
  assert int(m2["generated"]) == 6
  np.testing.assert_array_equal(generated_labels(ss), [0, 4, 2])
  rows = gas.generated_rows(algo.hparams, np.asarray(buf2.labels), np.ones((C, B), bool),
                            np.asarray(before.seen))
  _, (_, py, pv), n, overflow, _ = gen(before, buf2, jax.random.key(5), ss.server_updates, rows)
  py, pv = np.asarray(py), np.asarray(pv)
  assert int(n) == 6 and not bool(overflow)
  np.testing.assert_array_equal(py[pv], [1, 1, 1, 1, 2, 2])
  assert int(ss.server_updates) == 2
  assert bool(jnp.all(ss.stats.seen))


def test_nogen_has_no_generation(model):
  algo = _algo(model, generate=False)
  state = algo.init(jax.random.key(0))
  buf = state.buffer.replace(row_mask=jnp.ones((C, B), bool))
  ss, m = engine.make_server_runner(algo)(state.server, buf, np.int32(0), jax.random.key(0))
  assert int(m["generated"]) == 0
  assert bool(jnp.isfinite(m["server_loss"]))


def test_lr_decay_sqrt():
  from gas_jax import optim
  np.testing.assert_allclose(float(optim.learning_rate(0.01, jnp.int32(3), "sqrt")), 0.01 / 2.0)
  assert optim.learning_rate(0.01, jnp.int32(3), "none") == 0.01


def test_gradient_dissimilarity(model):
  """V = 0 when the server batch is exactly the test batches' activations; otherwise it equals
  the mean over parameter tensors of ||g_batch - mean_b g_b||^2 computed tensor by tensor."""
  algo = _algo(model)
  theta, phi = model.init(jax.random.key(3))
  rng = np.random.default_rng(0)
  tx = jnp.asarray(rng.normal(size=(2, B, 8, 8, 1)), jnp.float32)
  ty = jnp.asarray(rng.integers(0, M, (2, B)), jnp.int32)
  same = (model.client_apply(theta, tx[0]), ty[0], jnp.ones(B, bool))
  v0 = dissimilarity.gradient_dissimilarity(model, phi, theta, same, tx[:1], ty[:1])
  np.testing.assert_allclose(float(v0), 0.0, atol=1e-12)
  other = (jnp.asarray(rng.normal(size=(B,) + model.activation_shape), jnp.float32), ty[1],
           jnp.ones(B, bool))
  v = dissimilarity.gradient_dissimilarity(model, phi, theta, other, tx, ty)
  grad = lambda a, y: jax.grad(lambda p: losses.masked_mean_ce(   # noqa: E731
      model.server_apply(p, a), y, jnp.ones(B, bool)))(phi)
  g_b = jax.tree_util.tree_leaves(grad(other[0], other[1]))
  g0 = jax.tree_util.tree_leaves(grad(model.client_apply(theta, tx[0]), ty[0]))
  g1 = jax.tree_util.tree_leaves(grad(model.client_apply(theta, tx[1]), ty[1]))
  expected = np.mean([np.sum((np.asarray(a, np.float64) - (np.asarray(b0) + np.asarray(b1)) / 2) ** 2)
                      for a, b0, b1 in zip(g_b, g0, g1)])
  np.testing.assert_allclose(float(v), expected, rtol=1e-4)
  del algo


def _full_buffer(state, seed):
  rng = np.random.default_rng(seed)
  buf = state.buffer
  return buf.replace(acts=jnp.asarray(rng.normal(size=buf.acts.shape), jnp.float32),
                     labels=jnp.asarray(np.arange(C * B).reshape(C, B) % M, jnp.int32),
                     row_mask=jnp.ones((C, B), bool), tags=jnp.ones((C,), jnp.float32))


def test_refresh_every_keeps_stale_factors_between_refreshes(model):
  """stats.method=cholesky, refresh_every=3: factors are computed at the first update and then
  only at updates 3, 6, ...; in between they are stale while the means are exact."""
  algo = _algo(model, stats_method="cholesky", stats_refresh_every=3)
  state = algo.init(jax.random.key(0))
  step = jax.jit(algo.server_step)
  ss, chols, means = state.server, [], []
  for u in range(5):
    ss, _ = step(ss, dict(buffer=_full_buffer(state, u), global_iter=0), jax.random.key(u))
    chols.append(np.asarray(ss.stats.chol))
    means.append(np.asarray(ss.stats.mean))
  assert np.all(chols[0][:, 0, 0] > 0)                        # first factorisation
  np.testing.assert_array_equal(chols[1], chols[0])            # updates 1, 2: stale
  np.testing.assert_array_equal(chols[2], chols[0])
  assert not np.allclose(chols[3], chols[0])                   # update 3: refreshed
  np.testing.assert_array_equal(chols[4], chols[3])
  assert not np.allclose(means[1], means[0])                   # the means follow every merge
  exact = _algo(model, stats_method="cholesky")                # refresh_every=1 refreshes always
  ss1 = exact.init(jax.random.key(0)).server
  for u in range(2):
    ss1, _ = jax.jit(exact.server_step)(ss1, dict(buffer=_full_buffer(state, u), global_iter=0),
                                        jax.random.key(u))
  np.testing.assert_allclose(np.asarray(ss1.stats.mean), means[1], rtol=1e-6)
  assert not np.allclose(np.asarray(ss1.stats.chol), chols[1])


def test_lowrank_server_update_generates_within_its_memory(model):
  algo = _algo(model, stats_covariance="lowrank", stats_rank=8)
  state = algo.init(jax.random.key(0))
  d = int(np.prod(model.activation_shape))
  cap = stats_lib.lowrank_capacity(8, d, C * B, M, 16)
  assert state.server.stats.rows.shape == (M, cap, d)
  ss, truncated = state.server, False
  for u in range(6):
    before = np.asarray(ss.stats.used)
    ss, out = jax.jit(algo.server_step)(ss, dict(buffer=_full_buffer(state, u), global_iter=0),
                                        jax.random.key(u))
    truncated |= bool(np.any(np.asarray(ss.stats.used) < before))
    assert np.isfinite(float(out["server_loss"]))
    assert np.all(np.asarray(ss.stats.used) <= cap)
  assert truncated
  assert int(out["generated"]) == M * B - C * B                # every label topped up to B


def test_generated_rows_packs_to_buckets():
  """sum_y max(B - n_y, 0), rounded up to a multiple of ceil(M*B/5), 0 before all labels are
  seen; computed by hand for M=3, B=4 (unit 3)."""
  hp = gas.GasHParams(participating=C, batch_size=B, num_classes=M)
  labels = np.array([[0, 0, 1, 1], [0, 2, 2, 0]])
  mask = np.array([[True, True, True, False], [True, True, True, True]])
  # counts (masked): label 0: 4, label 1: 1, label 2: 2 -> need 0 + 3 + 2 = 5 -> 6.
  assert gas.generated_rows(hp, labels, mask, np.zeros(M, bool)) == 6
  assert gas.generated_rows(hp, np.zeros((C, B), int), np.ones((C, B), bool),
                            np.array([True, False, False])) == 0     # labels 1, 2 never seen
  # label 0 only: need 0 + 4 + 4 = 8 -> 9.
  assert gas.generated_rows(hp, np.zeros((C, B), int), np.ones((C, B), bool),
                            np.ones(M, bool)) == 9
  # In chunks, one size (M*B): the chunked forward/backward skips what is past the last row.
  chunked = gas.GasHParams(participating=C, batch_size=B, num_classes=M, server_chunk=4)
  assert gas.generated_row_sizes(chunked) == [M * B]
  assert gas.generated_rows(chunked, labels, mask, np.zeros(M, bool)) == M * B
  assert gas.generated_rows(chunked, np.zeros((C, B), int), np.ones((C, B), bool),
                            np.array([True, False, False])) == M * B


def test_chunked_grads_stop_after_the_last_valid_chunk(model):
  """`server.chunked_ce_grads` visits only the chunks up to the last valid row: rows past it
  may hold anything (here NaN) without changing the loss or the gradient, which equal the
  masked mean CE and its gradient taken in one pass over the valid rows alone (within 1e-5);
  rows past the last valid one inside a visited chunk are masked as before."""
  rng = np.random.default_rng(0)
  n, chunk, last = 23, 4, 9                       # valid rows: a prefix with a hole, up to 9
  x = rng.normal(size=(n,) + model.activation_shape).astype(np.float32)
  x[12:] = np.nan                                 # chunks 3.. (rows 12+) are never visited
  y = rng.integers(0, M, n)
  valid = np.arange(n) <= last
  valid[3] = False
  _, phi = model.init(jax.random.key(0))
  loss, grads = jax.jit(lambda p, x: gas_server.chunked_ce_grads(
      model, p, x, jnp.asarray(y), jnp.asarray(valid), jax.random.key(1), chunk))(phi, x)

  def reference(p):
    logits = model.server_apply(p, jnp.asarray(x[valid]))
    return losses.masked_mean_ce(logits, jnp.asarray(y[valid]), jnp.ones(valid.sum(), bool))

  want_loss, want_grads = jax.value_and_grad(reference)(phi)
  assert np.isfinite(float(loss))
  np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-5)
  chex.assert_trees_all_close(grads, want_grads, rtol=1e-5, atol=1e-6)


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
def test_packed_generated_rows_equal_masked_ones(model):
  """server_step with gen_rows packs the generated activations: same loss, parameters and
  statistics as the M*B masked rows; too few rows is flagged (gen_overflow)."""
  algo = _algo(model)
  state = algo.init(jax.random.key(0))
  step = jax.jit(algo.server_step)
  masked, packed = state.server, state.server
  rng = np.random.default_rng(0)
  for u in range(3):
    labels = rng.choice(M, size=(C, B), p=[0.6, 0.3, 0.1])
    buf = _full_buffer(state, u).replace(labels=jnp.asarray(labels, jnp.int32))
    rows = gas.generated_rows(algo.hparams, labels, np.ones((C, B), bool),
                              np.asarray(packed.stats.seen))
    assert rows < M * B
    masked, m_out = step(masked, dict(buffer=buf, global_iter=0), jax.random.key(u))
    packed, p_out = jax.jit(lambda s, b, k, r=rows: algo.server_step(
        s, dict(buffer=b, global_iter=0, gen_rows=r), k))(packed, buf, jax.random.key(u))
    assert int(m_out["generated"]) == int(p_out["generated"]) > 0
    assert not bool(p_out["gen_overflow"])
    np.testing.assert_allclose(float(p_out["server_loss"]), float(m_out["server_loss"]),
                               rtol=1e-5)
    chex.assert_trees_all_close(packed, masked, rtol=1e-5, atol=1e-6)
  _, out = jax.jit(lambda s, b, k: algo.server_step(
      s, dict(buffer=b, global_iter=0, gen_rows=1), k))(packed, buf, jax.random.key(9))
  assert bool(out["gen_overflow"])
  with pytest.raises(RuntimeError, match="gen_rows"):
    gas.check_gen_rows([jax.device_get(out)])


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
@pytest.mark.parametrize("chunk", [4, 5])
def test_chunked_server_update_equals_one_pass(model, chunk):
  """execution.server_chunk: the server forward/backward as a scan over row chunks (5 does not
  divide the 8 + generated rows: padding) gives one pass's loss, parameters and statistics."""
  one, chunked = _algo(model), _algo(model, server_chunk=chunk)
  state = one.init(jax.random.key(0))
  a, b = state.server, state.server
  for u in range(3):
    buf = _full_buffer(state, u)
    a, out_a = jax.jit(one.server_step)(a, dict(buffer=buf, global_iter=0), jax.random.key(u))
    b, out_b = jax.jit(chunked.server_step)(b, dict(buffer=buf, global_iter=0),
                                            jax.random.key(u))
    assert int(out_b["generated"]) == int(out_a["generated"])
    np.testing.assert_allclose(float(out_b["server_loss"]), float(out_a["server_loss"]),
                               rtol=1e-5)
    chex.assert_trees_all_close(b, a, rtol=1e-5, atol=1e-6)
  assert int(out_a["generated"]) > 0


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
@pytest.mark.parametrize("covariance", ["full", "lowrank"])
def test_compressions_from_the_host_equal_inline_ones(covariance):
  """The runners' server update (`gas.run_server_update`: the labels whose factor is full
  are compressed by a separate call, chosen on the host, then `server_step` with room_made)
  gives the same statistics and parameters as `server_step` compressing inside its merge,
  over updates that compress every label several times; a full label left uncompressed is
  flagged (stats_overflow) and `check_gen_rows` raises."""
  c, b = 8, 32
  model = get_model("cnn_small", "default", M, (4, 4, 1))     # D = 256: frequent compressions
  algo = gas.build(model, gas.GasHParams(participating=c, batch_size=b, num_classes=M,
                                         stats_block=4, stats_covariance=covariance,
                                         stats_rank=8))
  state = algo.init(jax.random.key(0))
  inline = jax.jit(lambda s, buf, k, rows: algo.server_step(
      s, dict(buffer=buf, global_iter=0, gen_rows=rows), k), static_argnums=3)
  server_run, compress_run = engine.make_server_runner(algo), engine.make_compress_runner(algo)
  a, h = state.server, jax.tree_util.tree_map(jnp.copy, state.server)
  rng = np.random.default_rng(0)
  compressions = 0
  for u in range(26):
    buf = state.buffer.replace(
        acts=jnp.asarray(rng.normal(size=state.buffer.acts.shape), jnp.float32),
        labels=jnp.asarray(rng.choice(M, size=(c, b), p=[0.4, 0.3, 0.3]), jnp.int32),
        row_mask=jnp.asarray(rng.random((c, b)) < 0.9),
        tags=jnp.asarray(rng.choice([0.0, 1.0, 2.0], size=c, p=[0.1, 0.6, 0.3]), jnp.float32))
    rows, full = gas.plan_server_update(algo, h, buf)
    compressions += len(full)
    a, out_a = inline(a, buf, jax.random.key(u), rows)
    h, out_h = gas.run_server_update(algo, server_run, compress_run, h, buf, np.int32(0),
                                     jax.random.key(u))
    assert not bool(out_h["stats_overflow"]) and not bool(out_a["stats_overflow"])
    chex.assert_trees_all_close(h, a, rtol=1e-5, atol=1e-5)
  assert compressions >= 2 * M
  # Without its compression a full label has no room: flagged, and the runners raise.
  while not gas.plan_server_update(algo, h, buf)[1]:
    h, _ = server_run(h, buf, np.int32(0), jax.random.key(99), gen_rows=rows, room_made=True)
  _, out = server_run(h, buf, np.int32(0), jax.random.key(100), gen_rows=rows, room_made=True)
  assert bool(out["stats_overflow"])
  with pytest.raises(RuntimeError, match="factor full"):
    gas.check_gen_rows([jax.device_get(out)])


def test_server_chunks_only_for_row_wise_server_parts():
  """execution.server_chunk keeps the one-pass numbers only where the server part treats rows
  independently: with dropout (ViT) or BatchNorm (cnn_small_bn) `build` turns chunks off."""
  hp = dict(participating=C, batch_size=B, server_chunk=32)
  cnn = get_model("cnn_small", "default", M, (8, 8, 1))
  assert cnn.server_rowwise
  assert gas.build(cnn, gas.GasHParams(num_classes=M, **hp)).hparams.server_chunk == 32
  for name, split, shape in (("vit_small", "L1", (32, 32, 3)),
                             ("cnn_small_bn", "default", (8, 8, 1))):
    other = get_model(name, split, 10, shape)
    assert not other.server_rowwise
    assert gas.build(other, gas.GasHParams(num_classes=10, **hp)).hparams.server_chunk == 0
