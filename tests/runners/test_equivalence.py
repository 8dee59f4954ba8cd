"""Execution strategies give the same numbers: cohorts vs event by event, 4 devices vs 1."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import digits
from helpers.same_run import ROOT, T, assert_same_run, columns, params
from gas_jax import context, engine, train
from gas_jax.system.scheduler import Event


def _config(model="cnn_small", **execution):
  c = digits.get_config()
  c.model.name = model
  c.num_global_iters = T
  c.clients.local_iters = 4
  c.checkpoint_every = T
  for k, v in execution.items():
    c.execution[k] = v
  return c


def _ev(slot, server_update=False, aggregate=False):
  return Event(client=slot, slot=slot, counter_tag=1, progress=0, buf_pos=0,
               server_update=server_update, upload=False, aggregate=aggregate, time=0.0)


def test_cohort_grouping_rules():
  evs = [_ev(0), _ev(1), _ev(0), _ev(2, server_update=True), _ev(1), _ev(2, aggregate=True),
         _ev(3)]
  groups = engine.cohorts(evs, 0)
  assert [[e.slot for e in g] for g in groups] == [[0, 1], [0, 2], [1, 2], [3]]
  assert [[e.slot for e in g] for g in engine.cohorts(evs, 1)] == [[e.slot] for e in evs]
  assert [len(g) for g in engine.cohorts(evs[:2], 1)] == [1, 1]
  assert engine.bucket(3) == 4 and engine.bucket(5, 4) == 8 and engine.bucket(1, 4) == 4


@pytest.mark.slow   # ~3 min on 2 shared cores; the default suite keeps the toy version,
# tests/run/test_execution.py::test_a_runner_follows_the_plan_it_is_given
def test_cohorts_equal_event_by_event(tmp_path):
  """Digits with generation on, 3 global iterations: cohort_size=0 == cohort_size=1."""
  a, b = str(tmp_path / "event"), str(tmp_path / "cohort")
  train.train_and_evaluate(_config(cohort_size=1), a)
  train.train_and_evaluate(_config(cohort_size=0), b)
  assert_same_run(a, b)


@pytest.mark.slow   # the fast unit version: test_stateful_models.py::test_cohort_step_equals_...
def test_cohorts_equal_event_by_event_with_batch_norm_and_dropout(tmp_path):
  """The same with running statistics and dropout keys (cnn_small_bn), one global iteration.

  Batch statistics make the dynamics more sensitive to float rounding (the vmapped reductions
  sum in another order): the BN shift parameters start at zero, so their own relative error
  reaches ~5e-4 after one iteration and a test prediction flips after three. So the model is
  compared as a whole: all parameters and running statistics within 1e-5 relative."""
  a, b = str(tmp_path / "event"), str(tmp_path / "cohort")
  for wd, size in ((a, 1), (b, 0)):
    c = _config("cnn_small_bn", cohort_size=size)
    c.num_global_iters = c.checkpoint_every = 1
    train.train_and_evaluate(c, wd)
  ra, rb = columns(a), columns(b)
  assert [r["test_accuracy"] for r in ra] == [r["test_accuracy"] for r in rb]
  for key in ("test_loss", "client_loss", "server_loss"):
    np.testing.assert_allclose([r[key] for r in ra], [r[key] for r in rb], rtol=1e-5)
  x = np.concatenate([np.ravel(v).astype(np.float64) for v in params(a)])
  y = np.concatenate([np.ravel(v).astype(np.float64) for v in params(b)])
  assert np.linalg.norm(x - y) <= 1e-5 * np.linalg.norm(y), np.linalg.norm(x - y) / np.linalg.norm(y)


@pytest.mark.slow
def test_four_devices_equal_one(tmp_path):
  """The cohort axis sharded over 4 forced CPU devices gives the single-device numbers."""
  outs = []
  for n in (1, 4):
    wd = str(tmp_path / f"dev{n}")
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
    proc = subprocess.run(
        [sys.executable, "-m", "gas_jax.main", "--config=configs/digits.py", f"--workdir={wd}",
         f"--config.num_global_iters={T}", "--config.clients.local_iters=4",
         f"--config.checkpoint_every={T}", "--config.execution.cohort_size=0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    err = proc.stderr
    assert proc.returncode == 0, err[err.find("Fatal"):][:3000] if "Fatal" in err else err[-3000:]
    outs.append(wd)
  assert_same_run(*outs)


@pytest.mark.slow   # ~30 s; keeps the default suite near 9 minutes
def test_cohort_sizes_are_compiled_before_training():
  """GasRunner.precompile compiles one program per bucketed cohort size (C=10: 1, 2, 4, 8, 16)
  up front, changing no state; training then compiles nothing new."""
  from gas_jax.registry import ALGORITHMS   # noqa: PLC0415
  c = _config(cohort_size=0)
  ctx = context.build_context(c)
  runner = ALGORITHMS.get("gas")(ctx)
  assert runner.calls.cohort._cache_size() == 5
  fresh = ALGORITHMS.get("gas")(context.build_context(_config(cohort_size=0)))
  for a, b in zip(jax.tree_util.tree_leaves(runner.state), jax.tree_util.tree_leaves(fresh.state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for _ in range(2):
    runner.run_iteration()
  assert runner.calls.cohort._cache_size() == 5
