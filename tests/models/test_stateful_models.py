"""Training-mode models: BatchNorm statistics and dropout keys through the algorithms.

`cnn_small_bn` (BatchNorm after conv1 and conv3, dropout in the server) stands in for VGG16-BN,
ResNet18 and ViT-small: the same code paths at a size that runs in seconds.
"""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gas_jax.models  # noqa: F401
from gas_jax import losses
from gas_jax.algorithms import fl, gas, sfl
from gas_jax.models import layers
from gas_jax.models.registry import get_model

C, B, M = 2, 4, 3
tree_map = jax.tree_util.tree_map


@pytest.fixture(scope="module")
def model():
  return get_model("cnn_small_bn", "default", M, (8, 8, 1))


class _BN(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    return layers.batch_norm(x, train, mask, "bn")


def test_batch_norm_against_float64_formulas():
  """Training mode: batch statistics of the masked rows only; running stats 0.9 old + 0.1 new
  (biased variance); evaluation mode uses the running statistics."""
  rng = np.random.default_rng(0)
  x = rng.normal(2.0, 3.0, size=(5, 3, 3, 4)).astype(np.float32)
  mask = np.array([1, 1, 0, 1, 0], bool)
  bn = _BN()
  v = bn.init(jax.random.key(0), x)
  y, upd = bn.apply(v, x, train=True, mask=jnp.asarray(mask), mutable=["batch_stats"])
  rows = x[mask].astype(np.float64).reshape(-1, 4)
  mean, var = rows.mean(0), rows.var(0)
  np.testing.assert_allclose(np.asarray(y), (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4,
                             atol=1e-4)
  stats = upd["batch_stats"]["bn"]
  np.testing.assert_allclose(np.asarray(stats["mean"]), 0.1 * mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(stats["var"]), 0.9 + 0.1 * var, rtol=1e-5)
  y_eval = bn.apply({"params": v["params"], **upd}, x)
  np.testing.assert_allclose(np.asarray(y_eval), (x - 0.1 * mean) / np.sqrt(0.9 + 0.1 * var
                                                                          + 1e-5), rtol=1e-4,
                             atol=1e-4)


def _batch(state, slot, seed, upload=False, aggregate=False):
  rng = np.random.default_rng(seed)
  return dict(slot=np.int32(slot), x=rng.normal(size=(B, 8, 8, 1)).astype(np.float32),
              y=rng.integers(0, M, B).astype(np.int32), mask=np.array([1, 1, 1, 0], bool),
              log_prior=np.zeros(M, np.float32), upload=np.bool_(upload),
              aggregate=np.bool_(aggregate), agg_weight=np.float32(1.0),
              server=state.server.server, event_id=np.int32(seed))


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
def test_gas_client_step_updates_running_stats_not_by_the_optimiser(model):
  """One client step: the slot's running statistics are those of the training-mode forward
  (no weight decay or momentum on them); the parameters follow SGD on the gradient taken with
  the same dropout key; the server model is not changed by a client step."""
  algo = gas.build(model, gas.GasHParams(participating=C, batch_size=B, num_classes=M, lr=0.1))
  state = algo.init(jax.random.key(0))
  b = _batch(state, 0, 1)
  key = jax.random.key(7)
  theta0 = tree_map(lambda p: p[0], state.client.slots)

  def loss_fn(p):
    a, th = model.client_train(model.with_trainable(theta0, p), b["x"],
                               jax.random.fold_in(key, 0), b["mask"])
    logits, _ = model.server_train(b["server"], a, jax.random.fold_in(key, 1), b["mask"])
    return losses.logit_adjusted_ce(logits, b["y"], b["mask"], b["log_prior"]), th

  grads, th = jax.grad(loss_fn, has_aux=True)(theta0["params"])
  norm = np.sqrt(sum(float(jnp.sum(g * g)) for g in jax.tree_util.tree_leaves(grads)))
  scale = min(1.0, 10.0 / norm)
  expected = tree_map(lambda w, g: w - 0.1 * (scale * g + 5e-4 * w), theta0["params"], grads)
  cs, _ = jax.jit(algo.client_step)(state.client, b, key)
  slot0 = tree_map(lambda p: p[0], cs.slots)
  chex.assert_trees_all_close(slot0["batch_stats"], th["batch_stats"], rtol=1e-6, atol=1e-7)
  assert not np.allclose(slot0["batch_stats"]["bn1"]["mean"], 0.0)
  chex.assert_trees_all_close(slot0["params"], expected, rtol=1e-4, atol=1e-6)
  # the optimiser state covers the parameters only
  trace = optax.tree_utils.tree_get(cs.client_opt, "trace")
  assert jax.tree_util.tree_structure(trace) == jax.tree_util.tree_structure(theta0["params"])


def test_gas_aggregates_running_stats_with_the_parameters(model):
  """C uploads: theta_glob's running statistics are the mean of the uploaded ones."""
  algo = gas.build(model, gas.GasHParams(participating=C, batch_size=B, num_classes=M, lr=0.1))
  state = algo.init(jax.random.key(0))
  step = jax.jit(algo.client_step)
  cs = state.client
  cs, _ = step(cs, _batch(state, 0, 1), jax.random.key(1))
  cs, _ = step(cs, _batch(state, 1, 2), jax.random.key(2))
  # Each upload is a step whose result enters the model buffer; the probe is the same step
  # without the upload flags, which leaves the uploaded model in the slot.
  outs = []
  for slot, seed, agg in ((0, 3, False), (1, 4, True)):
    pre = cs
    cs, _ = step(cs, _batch(state, slot, seed, upload=True, aggregate=agg), jax.random.key(9))
    probe, _ = step(pre, _batch(state, slot, seed), jax.random.key(9))
    outs.append(tree_map(lambda p, s=slot: np.asarray(p[s], np.float64), probe.slots))
  mean = tree_map(lambda a, b: 0.5 * (a + b), outs[0], outs[1])
  chex.assert_trees_all_close(tree_map(np.asarray, cs.global_client), mean, rtol=1e-5,
                              atol=1e-7)
  assert int(cs.global_iter) == 1


def test_gas_server_step_updates_server_running_stats(model):
  """SERVER_UPDATE runs the server in training mode over the real and generated rows."""
  algo = gas.build(model, gas.GasHParams(participating=C, batch_size=B, num_classes=M,
                                         generate=False))
  state = algo.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  buf = state.buffer.replace(
      acts=jnp.asarray(rng.normal(size=state.buffer.acts.shape), jnp.float32),
      labels=jnp.asarray(rng.integers(0, M, (C, B)), jnp.int32),
      row_mask=jnp.ones((C, B), bool), tags=jnp.ones((C,), jnp.float32))
  ss, out = jax.jit(algo.server_step)(state.server, dict(buffer=buf, global_iter=0),
                                      jax.random.key(1))
  x = buf.acts.reshape((C * B,) + model.activation_shape)
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(1), 0), gas.DROPOUT_SALT)
  _, phi = model.server_train(state.server.server, x, key, jnp.ones(C * B, bool))
  chex.assert_trees_all_close(ss.server["batch_stats"], phi["batch_stats"], rtol=1e-5,
                              atol=1e-7)
  assert np.isfinite(float(out["server_loss"]))


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
def test_cohort_step_equals_client_steps_with_dropout(model):
  """The cohort derives event i's key as fold_in(rng, event_id_i), as the engine does for
  `client_step`, so dropout masks and running statistics agree."""
  algo = gas.build(model, gas.GasHParams(participating=C, batch_size=B, num_classes=M))
  state = algo.init(jax.random.key(0))
  b0, b1 = _batch(state, 0, 5), _batch(state, 1, 6)
  rng = jax.random.key(3)
  cs = state.client
  for b in (b0, b1):
    cs, _ = jax.jit(algo.client_step)(cs, b, jax.random.fold_in(rng, b["event_id"]))
  per_event = {k: np.stack([b0[k], b1[k]]) for k in b0 if k != "server"}
  cohort = dict(per_event, valid=np.array([True, True]), server=state.server.server)
  cs2, _ = jax.jit(algo.cohort_step)(state.client, cohort, rng)
  chex.assert_trees_all_close(cs2.slots, cs.slots, rtol=1e-5, atol=1e-6)


def _two_client_steps(model):
  """Two GAS client steps in event order, each forward through the server's phi of the step
  before: (algo, state, batches, rng, phi0, phi after both)."""
  algo = gas.build(model, gas.GasHParams(participating=C, batch_size=B, num_classes=M))
  state = algo.init(jax.random.key(0))
  b0, b1 = _batch(state, 0, 5), _batch(state, 1, 6)
  rng = jax.random.key(3)
  phi0 = state.server.server
  phi, cs = phi0, state.client
  for b in (b0, b1):
    key = jax.random.fold_in(rng, b["event_id"])
    cs, out = jax.jit(algo.client_step)(cs, dict(b, server=phi), key)
    _, want = model.server_train(phi, out["act"].reshape((B,) + model.activation_shape),
                                 jax.random.fold_in(key, 1), b["mask"])
    chex.assert_trees_all_close(out["server"]["batch_stats"], want["batch_stats"], rtol=1e-5,
                                atol=1e-6)
    chex.assert_trees_all_equal(out["server"]["params"], phi0["params"])
    assert not np.allclose(out["server"]["batch_stats"]["bn3"]["mean"],
                           phi["batch_stats"]["bn3"]["mean"])
    phi = out["server"]
  return algo, state, (b0, b1), rng, phi0, phi


def test_client_steps_update_server_running_stats_as_ref(model):
  """REF (spec §1.5, §6.16): the client-gradient forward through phi runs in train mode and
  updates phi's BatchNorm running statistics on every client batch; its parameters stay.
  Two steps in event order: r1 = 0.9 r0 + 0.1 s1, r2 = 0.9 r1 + 0.1 s2 (the forward's batch
  statistics s_i, from the same training-mode forward with the step's dropout key). With
  server_bn_client_steps=False the client steps return no server model. (Cohorts: the next
  test, slow.)"""
  _, state, (b0, _), rng, _, _ = _two_client_steps(model)
  off = gas.build(model, gas.GasHParams(participating=C, batch_size=B, num_classes=M,
                                        server_bn_client_steps=False))
  _, out = jax.jit(off.client_step)(state.client, b0, rng)
  assert "server" not in out


@pytest.mark.slow   # a vmapped cohort step (~1.5 min on 2 shared cores; the budget, 2026-12-08)
def test_cohort_chains_the_server_running_stats_in_event_order(model):
  """The cohort (same phi0 for both forwards) chains the two updates in event order; a padding
  event changes nothing."""
  algo, state, (b0, b1), rng, phi0, phi = _two_client_steps(model)
  per_event = {k: np.stack([b0[k], b1[k]]) for k in b0 if k != "server"}
  cohort = dict(per_event, valid=np.array([True, True]), server=phi0)
  _, out = jax.jit(algo.cohort_step)(state.client, cohort, rng)
  chex.assert_trees_all_close(out["server"], phi, rtol=1e-5, atol=1e-6)
  cohort = dict(per_event, valid=np.array([True, False]), server=phi0)
  _, out1 = jax.jit(algo.cohort_step)(state.client, cohort, rng)
  _, first = jax.jit(algo.client_step)(state.client, dict(b0, server=phi0),
                                       jax.random.fold_in(rng, b0["event_id"]))
  chex.assert_trees_all_close(out1["server"], first["server"], rtol=1e-5, atol=1e-6)


def test_fl_local_step_trains_and_moves_running_stats(model):
  algo = fl.build(model, fl.FLHParams(lr=0.1))
  params, opt = algo.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = dict(x=rng.normal(size=(B, 8, 8, 1)).astype(np.float32),
               y=np.arange(B, dtype=np.int32) % M, mask=np.ones(B, bool),
               global_iter=np.int32(0))
  step = jax.jit(algo.local_step)
  p1, _, out = step(params, opt, batch, jax.random.key(1))
  _, new = model.full_train(params, batch["x"], jax.random.key(1), batch["mask"])
  chex.assert_trees_all_close(p1[0]["batch_stats"], new[0]["batch_stats"], rtol=1e-5, atol=1e-8)
  chex.assert_trees_all_close(p1[1]["batch_stats"], new[1]["batch_stats"], rtol=1e-5, atol=1e-8)
  assert bool(out["grad_finite"])
  # another dropout key gives another step
  p2, _, _ = step(params, opt, batch, jax.random.key(2))
  assert not np.allclose(p1[1]["params"]["fc2"]["kernel"], p2[1]["params"]["fc2"]["kernel"])


def test_sfl_steps_keep_running_stats(model):
  algo = sfl.build(model, fl.FLHParams(lr=0.1))
  theta, phi, copt, sopt = algo.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = dict(x=rng.normal(size=(B, 8, 8, 1)).astype(np.float32),
               y=np.arange(B, dtype=np.int32) % M, mask=np.ones(B, bool),
               global_iter=np.int32(0))
  theta1, _, out = jax.jit(algo.client_step)(theta, copt, phi, batch, jax.random.key(1))
  _, th = model.client_train(theta, batch["x"], jax.random.fold_in(jax.random.key(1), 0),
                             batch["mask"])
  chex.assert_trees_all_close(theta1["batch_stats"], th["batch_stats"], rtol=1e-5, atol=1e-8)
  sb = dict(act=out["act"], y=batch["y"], mask=batch["mask"], global_iter=np.int32(0))
  phi1, _, sout = jax.jit(algo.server_step)(phi, sopt, sb, jax.random.key(2))
  _, ph = model.server_train(phi, out["act"], jax.random.key(2), batch["mask"])
  chex.assert_trees_all_close(phi1["batch_stats"], ph["batch_stats"], rtol=1e-5, atol=1e-8)
  assert np.isfinite(float(sout["loss"]))


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
def test_gas_runner_threads_the_server_running_stats_of_client_steps():
  """Through the real runner (event by event): with server_bn_client_steps the client steps'
  forwards move phi's running statistics beyond what the server updates do; the runner keeps
  them (`gas_runner.take_server`). Same seed, same schedule, only the switch differs."""
  from configs import digits
  from gas_jax import context
  from gas_jax.registry import ALGORITHMS
  stats = {}
  for on in (True, False):
    c = digits.get_config()
    c.model.name, c.model.server_bn_client_steps = "cnn_small_bn", on
    c.clients.num, c.clients.participating, c.clients.local_iters = 5, 2, 2
    c.num_global_iters, c.execution.cohort_size = 1, 1
    runner = ALGORITHMS.get("gas")(context.build_context(c))
    phi0 = jax.device_get(runner.state.server.server)
    runner.run_iteration()
    phi = jax.device_get(runner.state.server.server)
    stats[on] = phi["batch_stats"]
    # phi's parameters move only by server updates; its statistics moved in both cases
    assert not np.allclose(phi["batch_stats"]["bn3"]["mean"], phi0["batch_stats"]["bn3"]["mean"])
  assert not np.allclose(stats[True]["bn3"]["mean"], stats[False]["bn3"]["mean"])
