"""Each baseline's simulated clock against the spec §2 formulas computed here, and a smoke test:
every method runs one global iteration from the driver and writes the same outputs as GAS."""
import dataclasses
import json
import os

import numpy as np
import pytest

from helpers import baseline_toys as toys
from configs import digits
from gas_jax import train
from gas_jax.registry import ALGORITHMS
from gas_jax.runners import fl_runner, sfl_runner

F_FULL, M_FULL = 69_833_728, 123_799_872          # spec §2.0
F_C, A_BITS, M_C = 5_603_328, 131_072, 620_544    # spec §1.9
B = 4                                             # toys.config batch size
C_K, R_K = toys.COMPUTE, toys.rate(toys.DISTANCE)


def _sfl_clock_only(runner):
  """Client and server steps stubbed out: the SFL clocks do not depend on training."""
  done = dict(loss=np.float32(0.0), grad_finite=np.bool_(True))
  runner.calls = dataclasses.replace(
      runner.calls, client=lambda th, opt, phi, *a: (th, opt, dict(done, act=None)),
      server=lambda phi, opt, *a: (phi, opt, dict(done)))
  return runner


def _selections(n, K, C, seed=0):
  rng = fl_runner.selection_rng(seed)
  return [rng.choice(K, C, replace=False) for _ in range(n)]


def test_fedavg_clock():
  cfg = toys.config("fedavg", num=4, participating=2, local_iters=3)
  runner = ALGORITHMS.get("fedavg")(toys.context(cfg))
  runner.local_training = lambda k, p: p          # the clock does not depend on training
  t = 0.0
  for sel in _selections(3, 4, 2):
    t = max(t + 3 * 2 * F_FULL / C_K[k] + M_FULL / R_K[k] for k in sel)
    assert runner.run_iteration()["simulated_time_s"] == pytest.approx(t, rel=1e-12)


def _async_expected(n_flush, K=4, C=2, E=2, seed=0):
  """Spec §2.2 event loop: (arrival clients, flush times)."""
  rng = fl_runner.selection_rng(seed)
  active = list(rng.choice(K, C, replace=False))
  dur = lambda k: E * 2 * F_FULL / C_K[k] + M_FULL / R_K[k]  # noqa: E731
  tau = {k: dur(k) for k in active}
  arrivals, flushes, count = [], [], 0
  while len(flushes) < n_flush:
    s = min(range(C), key=lambda i: (tau[active[i]], i))
    k = active[s]
    t_now = tau[k]
    arrivals.append(k)
    count += 1
    if count == C:
      flushes.append(t_now)
      count = 0
    j = rng.choice(sorted(set(range(K)) - set(active)))
    active[s] = j
    tau[j] = t_now + dur(j)
  return arrivals, flushes


@pytest.mark.parametrize("method", ["fedbuff", "ca2fl"])
def test_async_clock(method):
  cfg = toys.config(method, num=4, participating=2, local_iters=2)
  runner = ALGORITHMS.get(method)(toys.context(cfg))
  arrivals = []
  runner.local_training = lambda k, p: (arrivals.append(k), p)[1]   # clock only
  times = [runner.run_iteration()["simulated_time_s"] for _ in range(4)]
  want_arrivals, want_times = _async_expected(4)
  assert arrivals == [int(k) for k in want_arrivals]
  np.testing.assert_allclose(times, want_times, rtol=1e-12)
  assert times == sorted(times)


def test_minibatch_sfl_clock():
  """Closed form of the per-iteration barrier: T_1 = t0 + max_k fwd_k,
  T_{e+1} = T_e + max_k (bwd_k + fwd_k), end = max_k (T_E + bwd_k + Mbits_c/r_k)."""
  cfg = toys.config("minibatch_sfl", num=4, participating=3, local_iters=3)
  runner = _sfl_clock_only(ALGORITHMS.get("minibatch_sfl")(toys.context(cfg)))
  t = 0.0
  for sel in _selections(2, 4, 3):
    fwd = F_C / C_K[sel] + B * A_BITS / R_K[sel]
    bwd = F_C / C_K[sel]
    big_t = t + fwd.max()
    for _ in range(2):
      big_t += (bwd + fwd).max()
    t = float(np.max(big_t + bwd + M_C / R_K[sel]))
    assert runner.run_iteration()["simulated_time_s"] == pytest.approx(t, rel=1e-12)


def _s2fl_cost(k, layer):
  f, a = [(884_736, 262_144), (5_603_328, 131_072)][layer]
  return 2 * f / C_K[k] + B * a / R_K[k]


def test_s2fl_median_rule_by_hand():
  """B = 4. Clients 0 (1e9 FLOP/s, 0.1 km) and 2 (4e9, 1 km): costs ~(0.01041, 0.01553) and
  ~(0.12673, 0.06594); median of the four ~0.04074; both take their L2 cost (closer to it); the
  iteration costs client 2's L2 cost."""
  cfg = toys.config("s2fl", num=4, participating=2)
  tm = toys.context(cfg).time_model
  costs = [[_s2fl_cost(k, j) for j in (0, 1)] for k in (0, 2)]
  np.testing.assert_allclose(costs, [[0.01041, 0.01553], [0.12673, 0.06594]], atol=2e-5)
  assert sfl_runner.s2fl_iteration_time(tm, [0, 2]) == pytest.approx(_s2fl_cost(2, 1), rel=1e-12)
  # A single client: the median is between its two costs -> tie broken toward the first (L1).
  assert sfl_runner.s2fl_iteration_time(tm, [1]) == pytest.approx(_s2fl_cost(1, 0), rel=1e-12)


@pytest.mark.parametrize("candidates", ["ref", "model"])
def test_s2fl_clock(candidates):
  """'model' (here the toy TimeModel holds the REF L2 constants): the only candidate is the
  L2 split, so an iteration costs max_k (2 F_c/c_k + B A/r_k)."""
  cfg = toys.config("s2fl", num=4, participating=2, local_iters=3, s2fl__candidates=candidates)
  runner = _sfl_clock_only(ALGORITHMS.get("s2fl")(toys.context(cfg)))
  t = 0.0
  for sel in _selections(2, 4, 2):
    costs = np.array([[_s2fl_cost(k, j) for j in (0, 1)] for k in sel])
    med = np.median(costs)
    it = max(row[np.argmin(np.abs(row - med))] for row in costs)
    if candidates == "model":
      it = max(2 * F_C / C_K[k] + B * A_BITS / R_K[k] for k in sel)
    t = max(t + 3 * it + M_C / R_K[k] for k in sel)
    assert runner.run_iteration()["simulated_time_s"] == pytest.approx(t, rel=1e-12)


# gas_nogen is the GAS runner with generation off: the reference for the output files.
METHODS = ["gas_nogen", "fedavg", "fedbuff", "ca2fl", "minibatch_sfl", "s2fl"]


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
  out = {}
  for m in METHODS:
    c = digits.get_config()
    c.algorithm, c.num_global_iters = m, 1
    c.clients.num, c.clients.participating, c.clients.local_iters = 4, 2, 2
    c.data.shards = 5
    c.log_every_s = 1e9
    wd = str(tmp_path_factory.mktemp(m))
    out[m] = (wd, train.train_and_evaluate(c, wd))
  return out


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
@pytest.mark.parametrize("method", METHODS)
def test_every_method_writes_gas_outputs(smoke_runs, method):
  wd, summary = smoke_runs[method]
  for name in ("config.json", "metrics.jsonl", "summary.json"):
    assert os.path.exists(os.path.join(wd, name)), name
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  with open(os.path.join(smoke_runs["gas_nogen"][0], "metrics.jsonl")) as f:
    gas_keys = set(json.loads(f.readline()))
  assert len(rows) == 1 and set(rows[0]) == gas_keys
  assert rows[0]["simulated_time_s"] > 0 and rows[0]["client_steps"] > 0
  assert 0.0 <= summary["final_accuracy"] <= 1.0 and summary["algorithm"] == method
