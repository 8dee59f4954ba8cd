"""Every method sees the same data pipeline (spec §4.1): one shared `augment.train_batch`.

With `data.augment` on, every client step of every method trains on the minibatch augmented
with the step's key `step_key(run_key(seed), n)`; with it off, on the clean rows. The test spies
on the one shared function, so a runner that read `data["x"][idx]` on its own would record
nothing and fail.
"""
import jax
import numpy as np
import pytest

from configs import digits
from gas_jax import context
from gas_jax.data import augment as augment_lib
from gas_jax.registry import ALGORITHMS
from gas_jax.runners import fl_runner, sfl_runner

# One method per runner in the default suite (GasRunner, the FL runners' shared local training,
# SyncSflRunner); the other methods of the same runners in the slow set.
METHODS = ("gas", "fedbuff", "minibatch_sfl") + tuple(
    pytest.param(m, marks=pytest.mark.slow) for m in ("gas_nogen", "fedavg", "ca2fl", "s2fl"))
SEED = 3


def _config(method, augment):
  c = digits.get_config()
  c.seed, c.algorithm, c.data.augment = SEED, method, augment
  c.clients.num, c.clients.participating, c.clients.local_iters = 5, 2, 2
  c.num_global_iters = 1
  return c


@pytest.fixture
def spy(monkeypatch):
  """Records (x, idx, step) of every minibatch read through augment.train_batch."""
  records = []
  orig = augment_lib.train_batch

  def recording(data, idx, key, step_id, augmenter):
    x, y = orig(data, idx, key, step_id, augmenter)
    jax.debug.callback(lambda *a: records.append(tuple(np.asarray(v) for v in a)), x, idx,
                       step_id)
    return x, y

  def clear():   # the baselines' compiled steps are cached per (model, hparams, augmenter)
    fl_runner.compiled_step.cache_clear()
    sfl_runner.compiled_steps.cache_clear()

  monkeypatch.setattr(augment_lib, "train_batch", recording)
  clear()
  yield records
  clear()


def _run(method, augment, records):
  records.clear()
  cfg = _config(method, augment)
  ctx = context.build_context(cfg)
  runner = ALGORITHMS.get(method)(ctx)
  row = runner.run_iteration()
  jax.effects_barrier()
  return cfg, ctx, row, list(records), jax.device_get(runner.eval_params())


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_on_the_shared_augmented_batches(method, spy):
  on_cfg, ctx, row, on, on_params = _run(method, True, spy)
  x_all = np.asarray(ctx.data["x"])
  aug = augment_lib.from_config(on_cfg)
  assert aug is not None
  steps = sorted(int(s) for _, _, s in on)
  assert steps == list(range(row["client_steps"]))       # every client step, each once
  for x, idx, step in on:
    want = aug(x_all[idx], augment_lib.step_key(augment_lib.run_key(SEED), int(step)))
    np.testing.assert_array_equal(x, np.asarray(want))
    assert not np.array_equal(x, x_all[idx])           # the augmentation changed the batch
  _, _, row_off, off, off_params = _run(method, False, spy)
  assert sorted(int(s) for _, _, s in off) == list(range(row_off["client_steps"]))
  for x, idx, _ in off:
    np.testing.assert_array_equal(x, x_all[idx])          # clean rows, unchanged
  # Same minibatch indices in both runs (the pipeline's order does not depend on augment) ...
  by_step = {int(s): i for _, i, s in off}
  for _, idx, step in on:
    np.testing.assert_array_equal(idx, by_step[int(step)])
  # ... so only the augmentation differs, and the trained models differ.
  diff = jax.tree_util.tree_map(lambda a, b: float(np.max(np.abs(a - b))), on_params,
                                off_params)
  assert max(jax.tree_util.tree_leaves(diff)) > 1e-4
