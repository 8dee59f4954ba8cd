"""Staleness columns (gas_jax.staleness) written by every runner: FedBuff / CA2FL and GAS on
hand-worked schedules, all 7 methods' columns sane, the runs axis equal to single runs and
resumed from its checkpointed state."""
import dataclasses
import json

import jax
import numpy as np
import pytest

from helpers import gas_toys as toys
from helpers.staleness_toys import FixedTimes, start_async, start_gas
from gas_jax import checkpoint, staleness
from gas_jax.registry import ALGORITHMS
from gas_jax.runners import fl_runner, seeds_runner

SYNC = ("fedavg", "minibatch_sfl", "s2fl")
FL = ("fedavg", "fedbuff", "ca2fl")
ALL7 = ("gas", "gas_nogen", "fedavg", "fedbuff", "ca2fl", "minibatch_sfl", "s2fl")


def stub_sfl_steps(runner):
  """MiniBatch-SFL / S2FL with client and server steps stubbed out (round structure only)."""
  done = dict(loss=np.float32(0.0), grad_finite=np.bool_(True))
  runner.calls = dataclasses.replace(
      runner.calls, client=lambda th, opt, phi, *a: (th, opt, dict(done, act=None)),
      server=lambda phi, opt, *a: (phi, opt, dict(done)))
  return runner


def _hist(row, kind):
  return row[f"{kind}_staleness_hist"]


@pytest.mark.parametrize("method,overrides,want", [
    ("fedbuff", {}, [[0, 0], [1, 0], [1, 0]]),
    ("ca2fl", {}, [[0, 0], [1, 0], [0, 0]]),
    ("ca2fl", {"ca2fl__true_staleness": True}, [[0, 0], [1, 0], [1, 0]]),
])
def test_async_fl_hand_worked_schedule(method, overrides, want):
  """K = 3, C = 2; dispatch-to-arrival takes 1 s for clients 0 and 2, 2.5 s for client 1 (the
  straggler); slots start with [0, 1] at t = 0 with version 0 (spec §2.2 event loop; version
  v = global model after v flushes, dv = version each slot was dispatched with):

    A1 c0 (slot0) @1:   0 - 0 = 0. Replacement c2 -> slot0, dispatched @1 with v0, due @2.
    A2 c2 (slot0) @2:   0 - 0 = 0 -> flush, v1 (row 1: [0, 0]). c0 -> slot0 (v1), due @3.
    A3 c1 (slot1) @2.5: 1 - 0 = 1 (an initial slot: w0 by value, also in REF CA2FL).
                        c2 -> slot1 (v1), due @3.5.
    A4 c0 (slot0) @3:   1 - 1 = 0 -> flush, v2 (row 2: [1, 0]). c1 -> slot0 (v2), due @5.5.
    A5 c2 (slot1) @3.5: 2 - 1 = 1; REF CA2FL's re-dispatched slots train from the live global
                        at arrival (spec §2.3 aliasing): 0. c0 -> slot1 (v2), due @4.5.
    A6 c0 (slot1) @4.5: 2 - 2 = 0 -> flush, v3 (row 3: [1, 0], REF CA2FL [0, 0]).
  """
  cfg = toys.config(method, num=3, participating=2, local_iters=2, **overrides)
  runner = ALGORITHMS.get(method)(toys.context(cfg, sizes=(6, 5, 9)))
  runner.clock = fl_runner.AsyncClock(FixedTimes(full=[1.0, 2.5, 1.0]), 3, 2, 2, runner.rng)
  start_async(runner.clock, [0, 1])
  arrivals = []
  runner.local_training = lambda k, p: (arrivals.append(k), p)[1]   # the schedule only
  rows = [runner.run_iteration() for _ in range(3)]
  assert arrivals == [0, 2, 1, 0, 2, 0]
  assert [r["simulated_time_s"] for r in rows] == [2.0, 3.0, 4.5]
  for row, values in zip(rows, want):
    assert {k: row[k] for k in staleness.COLUMNS} == staleness.columns(values, None)


def test_gas_runner_hand_worked_schedule():
  """The schedule of tests/test_staleness.py (`test_gas_scheduler_hand_worked_schedule`, whose
  docstring derives it) through the real GAS runner: rows 1-2 carry its values."""
  cfg = toys.config("gas_nogen", num=3, participating=2, local_iters=2)
  ctx = toys.context(cfg, sizes=(6, 5, 9))
  ctx.time_model = FixedTimes(act=[1.0, 2.75, 1.0])
  runner = ALGORITHMS.get("gas_nogen")(ctx)
  start_gas(runner.scheduler, [0, 1])
  rows = [runner.run_iteration() for _ in range(2)]
  assert [r["client_steps"] for r in rows] == [5, 8]
  assert [r["model_staleness_hist"] for r in rows] == [{"0": 2}, {"0": 1, "1": 1}]
  assert [r["activation_staleness_hist"] for r in rows] == [{"0": 3, "1": 1},
                                                           {"0": 1, "1": 2, "3": 1}]
  assert [r["activation_staleness_mean"] for r in rows] == [0.25, 1.25]
  assert [r["model_staleness_max"] for r in rows] == [0, 1]


def test_synchronous_methods_by_construction():
  """FedAvg, MiniBatch-SFL, S2FL (steps stubbed: the columns depend on the round structure
  only): C models of staleness 0; local iteration e's C activations have e - 1 (K=4, C=2, E=3)."""
  for method in SYNC:
    cfg = toys.config(method, num=4, participating=2, local_iters=3)
    runner = ALGORITHMS.get(method)(toys.context(cfg))
    if method == "fedavg":
      runner.local_training = lambda k, p: p
    else:
      runner = stub_sfl_steps(runner)
    for _ in range(2):
      row = runner.run_iteration()
      assert _hist(row, "model") == {"0": 2} and row["model_staleness_mean"] == 0.0
      assert _hist(row, "activation") == (None if method == "fedavg" else
                                          {"0": 2, "1": 2, "2": 2})
      assert row["activation_staleness_mean"] == (None if method == "fedavg" else 1.0)


@pytest.fixture(scope="module")
def all7_rows():
  out = {}
  for m in ALL7:
    cfg = toys.config(m, num=4, participating=2, local_iters=3)
    runner = ALGORITHMS.get(m)(toys.context(cfg))
    out[m] = [runner.run_iteration() for _ in range(3)]
  return out


@pytest.mark.slow   # ~80 s on a busy 2-core CPU: seven methods compiled and trained
@pytest.mark.parametrize("method", ALL7)
def test_every_method_writes_sane_staleness(all7_rows, method):
  """All 7 methods trained for 3 global iterations on the toy (K=4, C=2, E=3)."""
  C, E = 2, 3
  for row in all7_rows[method]:
    assert set(staleness.COLUMNS) <= set(row)
    assert json.loads(json.dumps(row)) == row      # strict JSON
    model = staleness.merge_hists([_hist(row, "model")])
    assert sum(model.values()) == C                # every row aggregates C models
    assert row["model_staleness_max"] == max(model) >= 0
    assert row["model_staleness_mean"] == pytest.approx(
        sum(v * n for v, n in model.items()) / C)
    if method in SYNC:
      assert model == {0: C}
    act = _hist(row, "activation")
    if method in FL:
      assert act is None and row["activation_staleness_mean"] is None
      continue
    act = staleness.merge_hists([act])
    if method in SYNC:             # local iteration e's activations: e - 1 server updates
      assert act == {e: C for e in range(E)}
    else:                          # C activation minibatches per server update
      assert sum(act.values()) % C == 0 and sum(act.values()) > 0
    assert row["activation_staleness_max"] == max(act)
  if method in ("gas", "gas_nogen"):   # the toy's stragglers: activations from stale models
    assert max(r["activation_staleness_max"] for r in all7_rows[method]) > 0


def _seeds_runner(seeds):
  ctxs = [toys.context(toys.config("gas_nogen", num=4, participating=2, local_iters=3, seed=s),
                       seed=s) for s in seeds]
  return seeds_runner.SeedsGasRunner(ctxs, generate=False, vmapped=False)


def _stale(row):
  return {k: row[k] for k in staleness.COLUMNS}


@pytest.mark.slow   # ~90 s on a busy 2-core CPU (three runners compiled); tests/run/test_multiseed
# compares the runs axis with single runs in the default suite (helpers.same_run: staleness too)
def test_runs_axis_equals_single_runs_and_resumes():
  """The runs axis (host loop) gives each seed the staleness of its single run, also when
  resumed from its checkpointed state after the first advance (one seed mid-iteration)."""
  seeds, T = (0, 1), 3
  single = {}
  for s in seeds:
    runner = ALGORITHMS.get("gas_nogen")(toys.context(
        toys.config("gas_nogen", num=4, participating=2, local_iters=3, seed=s), seed=s))
    single[s] = [_stale(runner.run_iteration()) for _ in range(T)]

  def advance(runner, got):
    while min(len(v) for v in got.values()) < T:
      for i, row in runner.run_iteration().items():
        got[seeds[i]].append(_stale(row))

  first = _seeds_runner(seeds)
  got = {s: [] for s in seeds}
  while True:   # advance until a checkpoint would catch a seed mid-iteration
    for i, row in first.run_iteration().items():
      got[seeds[i]].append(_stale(row))
    state = first.state_dict()
    if any(m or a for m, a in state["staleness_hist"]):
      break
    assert max(len(v) for v in got.values()) < T
  device = jax.tree_util.tree_map(np.array, state.pop("device"))
  host = checkpoint.from_json(json.loads(json.dumps(checkpoint.to_json(state))))
  resumed = _seeds_runner(seeds)
  resumed.load_state_dict(dict(host, device=device))
  advance(resumed, got)
  assert {s: v[:T] for s, v in got.items()} == single
