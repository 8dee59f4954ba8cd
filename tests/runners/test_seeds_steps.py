"""The seeds' server-side calls on stacked states (`gas_jax.runners.seeds_steps`).

Digits (cnn_small) with generation on, three seeds with random buffers: one vmapped server
update of the seeds that are due equals their separate updates (within float32 rounding: the
matmuls gain a batch axis), a seed not due keeps every leaf of its state bit for bit, and a
compression of one seed's label inside the stacked statistics equals `algo.compress` on that
seed alone while the other seeds stay bit for bit.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from gas_jax import context, engine
from gas_jax.algorithms import gas
from gas_jax.runners import seeds_steps

S = 3


def _setup(relative=False):
  c = digits.get_config()
  c.weighting.fn = "exp" if relative else "ref"   # "exp": relative tags with reference shifts
  ctx = context.build_context(c)
  hp = gas.hparams_from_config(c, ctx.dataset.num_classes, True)
  algo = gas.build(ctx.model, hp)
  servers = [algo.init(jax.random.key(s)).server for s in range(S)]
  return c, algo, servers


def _buffer(rng, algo, like):
  m, (cc, b, d) = algo.hparams.num_classes, like.acts.shape
  return like.replace(acts=jnp.asarray(rng.normal(size=(cc, b, d)), jnp.float32),
                      labels=jnp.asarray(rng.integers(0, m, (cc, b)), jnp.int32),
                      row_mask=jnp.asarray(rng.random((cc, b)) < 0.9),
                      tags=jnp.asarray(rng.integers(1, 4, cc), jnp.float32),
                      tag_shift=None if like.tag_shift is None else
                      jnp.asarray(rng.uniform(0.0, 0.5, cc), jnp.float32))


def _stack(trees):
  return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def _seed(tree, s):
  return jax.tree_util.tree_map(lambda a: a[s], tree)


@pytest.fixture(scope="module", params=[
    pytest.param(False, marks=pytest.mark.slow),   # CI budget (2026-12-01 timings)
    True], ids=["ref_tags", "relative_tags"])
def rounds(request):
  """Two rounds of server updates on random buffers, vmapped and separately. Round 0: every
  seed is due; round 1: seeds 0 and 2 only. With relative tags ("exp") the buffers carry
  reference shifts, which must rescale nothing of a seed that is not due. Returns (algo,
  per-round records, stacked servers after round 1, separate servers after round 1)."""
  _, algo, servers = _setup(request.param)
  like = algo.init(jax.random.key(0)).buffer
  rng = np.random.default_rng(0)
  single = engine.make_server_runner(algo)
  vmapped = seeds_steps.make_server_runner(algo)
  keys = [jax.random.fold_in(jax.random.key(s), 2) for s in range(S)]
  stacked, records = _stack(servers), []
  for rnd, due in enumerate([np.array([True] * S), np.array([True, False, True])]):
    bufs = [_buffer(rng, algo, like) for _ in range(S)]
    rows = [gas.plan_server_update(algo, servers[s], bufs[s])[0] for s in range(S)]
    gen_rows = max(r for r, d in zip(rows, due) if d)
    before = jax.device_get(stacked)
    stacked, out = vmapped(stacked, _stack(bufs), np.full(S, rnd, np.int32), jnp.stack(keys),
                           due, gen_rows=gen_rows, room_made=True)
    sep = {}
    for s in np.flatnonzero(due):
      servers[s], sep[s] = single(servers[s], bufs[s], np.int32(rnd), keys[s],
                                  gen_rows=gen_rows, room_made=True)
    records.append((due, before, jax.device_get(stacked), jax.device_get(out),
                    jax.device_get(servers), jax.device_get(sep)))
  return algo, records, stacked, servers


def test_vmapped_server_update_equals_separate_ones_and_skips_seeds_not_due(rounds):
  _, records, _, _ = rounds
  for due, before, after, out, servers, sep in records:
    for s in range(S):
      if not due[s]:
        chex.assert_trees_all_equal(_seed(after, s), _seed(before, s))
        continue
      chex.assert_trees_all_close(_seed(after, s), servers[s], rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(out["server_loss"][s], sep[s]["server_loss"], rtol=1e-5)
      assert int(out["generated"][s]) == int(sep[s]["generated"])
      assert int(sep[s]["generated"]) > 0     # every label is seen after the first merge
      assert not bool(out["stats_overflow"][s]) and not bool(out["gen_overflow"][s])
  assert [list(r[0]) for r in records] == [[True] * S, [True, False, True]]


def test_compress_one_seed_in_the_stack_equals_compressing_it_alone(rounds):
  algo, _, stacked, servers = rounds
  stacked = jax.tree_util.tree_map(jnp.copy, stacked)     # the runner donates its input
  used = np.asarray(stacked.stats.used)
  assert 0 < used[1, 3] < stacked.stats.mean.shape[-1]    # rows merged, not yet D
  before = jax.device_get(stacked)
  out = seeds_steps.make_compress_runner(algo)(stacked, np.int32(1), np.int32(3))
  alone = jax.jit(algo.compress)(servers[1], np.int32(3))
  chex.assert_trees_all_close(_seed(out, 1), alone, rtol=1e-5, atol=1e-6)
  for s in (0, 2):
    chex.assert_trees_all_equal(_seed(out, s), _seed(before, s))
  # The compression did something: label 3's rows in use changed, and nothing else's.
  changed = np.asarray(out.stats.used) != used
  assert changed[1, 3] and changed.sum() == 1
