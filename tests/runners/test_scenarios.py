"""Clients that come and go in every method (issue #29, docs/scenarios.md): all 7 methods take
their clients' behaviour from the one shared `ClientSystem` (`ctx.system`).

- An offline client is never dispatched (a spy on `ClientSystem.dispatch`, the only way any
  runner starts a client's work).
- A trace where everyone is always online, with dropout 0, gives exactly the default's rows
  (the scenario code path itself changes no number).
- The same seed gives the same losses; an interrupted run resumes equal (markov + dropout).
"""
import json

import jax
import numpy as np
import pytest

from configs import digits
from helpers import cli_runs
from gas_jax import context, train
from gas_jax.registry import ALGORITHMS
from gas_jax.system import availability

METHODS = ("gas", "gas_nogen", "fedavg", "fedbuff", "ca2fl", "minibatch_sfl", "s2fl")
NEW = ("clients_online", "clients_dispatched", "updates_lost")


def _config(method, **system):
  c = digits.get_config()
  c.algorithm = method
  c.clients.num, c.clients.participating, c.clients.local_iters = 5, 3, 2
  if method == "s2fl":
    c.clients.participating = 4      # s2fl.num_groups (2) must divide it
  c.eval_examples = 100
  for k, v in system.items():
    c.system[k] = v
  return c


# Fast switching on the toy's time scale (a round lasts ~0.05-0.3 simulated s).
MARKOV = dict(availability="markov", mean_online_s=0.08, mean_offline_s=0.04, dropout=0.2)


def _rows(cfg, iters=2, spy=None, schedule_only=False):
  ctx = context.build_context(cfg)
  if spy is not None:
    spy(ctx.system)
  runner = ALGORITHMS.get(cfg.algorithm)(ctx)
  if schedule_only:   # GAS: the runner's own scheduler, without the device steps (fast)
    return [dict(clients_dispatched=ctx.system.take_row(
        runner.scheduler.next_iteration()[-1].iteration_time)["clients_dispatched"])
        for _ in range(iters)]
  return [runner.run_iteration() for _ in range(iters)]


@pytest.mark.parametrize("method", ("gas", "gas_nogen", "fedavg", "ca2fl", "s2fl") + tuple(
    pytest.param(m, marks=pytest.mark.slow) for m in ("fedbuff", "minibatch_sfl")))
def test_an_offline_client_is_never_dispatched(method):
  seen = []

  def spy(system):
    orig = system.dispatch

    def dispatch(k, t, duration):
      seen.append((int(k), float(t), system.online(int(k), float(t))))
      return orig(k, t, duration)
    system.dispatch = dispatch

  rows = _rows(_config(method, **MARKOV), spy=spy, schedule_only=method.startswith("gas"))
  assert seen and all(ok for _, _, ok in seen), [s for s in seen if not s[2]]
  assert sum(r["clients_dispatched"] for r in rows) == len(seen)
  # offline clients existed at the dispatch times: the check had something to refuse
  probe = context.build_context(_config(method, **MARKOV)).system
  assert any(not probe.online(k, t) for _, t, _ in seen for k in range(5))


def _always_trace(tmp_path):
  path = tmp_path / "all_online.csv"
  path.write_text("client,start,end\n" + "".join(f"{k},0,1e12\n" for k in range(5)))
  return str(path)


@pytest.mark.parametrize("method", ("fedbuff", "minibatch_sfl") + tuple(
    pytest.param(m, marks=pytest.mark.slow)
    for m in ("gas", "gas_nogen", "fedavg", "ca2fl", "s2fl")))
def test_dropout_zero_and_everyone_online_equal_the_default_exactly(method, tmp_path):
  default = _rows(_config(method))
  scenario = _rows(_config(method, availability="trace", trace=_always_trace(tmp_path),
                           dropout=0.0))
  assert default == scenario
  assert all(r["updates_lost"] == 0 and r["clients_online"] == 5 for r in default)
  old = _config(method)          # a config from before issue #29: no system section
  del old["system"]
  assert _rows(old) == default


@pytest.mark.parametrize("method", ("fedbuff", "minibatch_sfl", pytest.param(
    "gas", marks=pytest.mark.slow)))
def test_same_seed_same_losses(method):
  a, b = _rows(_config(method, **MARKOV)), _rows(_config(method, **MARKOV))
  assert a == b
  assert sum(r["updates_lost"] for r in a) > 0
  other = _config(method, **MARKOV)
  other.seed = 1
  assert [r["updates_lost"] for r in _rows(other)] != [r["updates_lost"] for r in a] or \
      [r["simulated_time_s"] for r in _rows(other)] != [r["simulated_time_s"] for r in a]


@pytest.mark.parametrize("method", ("fedbuff", pytest.param("gas", marks=pytest.mark.slow),
                                    pytest.param("s2fl", marks=pytest.mark.slow)))
def test_interrupted_run_resumes_equal_with_markov_and_dropout(method, tmp_path):
  """T=2, then the same workdir continued to T=4 (from its checkpoint), against T=4 at once."""
  def cfg(t):
    c = _config(method, **MARKOV)
    c.num_global_iters, c.checkpoint_every = t, 1
    return c
  train.train_and_evaluate(cfg(4), str(tmp_path / "whole"))
  train.train_and_evaluate(cfg(2), str(tmp_path / "split"))
  jax.clear_caches()
  train.train_and_evaluate(cfg(4), str(tmp_path / "split"))
  whole, split = cli_runs.rows(tmp_path / "whole"), cli_runs.rows(tmp_path / "split")
  assert len(whole) == 4 and whole == split
  assert sum(r["updates_lost"] for r in whole) > 0
  with open(tmp_path / "whole" / "summary.json") as f:
    summary = json.load(f)
  assert summary["updates_lost_total"] == sum(r["updates_lost"] for r in whole)
  assert summary["clients_dispatched_total"] == sum(r["clients_dispatched"] for r in whole)


def test_synchronous_round_deadline_rule():
  """docs/scenarios.md: a round ends when all returned or were cut, or at the deadline; a model
  arriving after the deadline is missing."""
  s = availability.ClientSystem(None, 3, 0, round_deadline_s=5.0)
  ends, cuts = np.array([3.0, 7.0, 4.0]), np.array([np.inf, np.inf, 2.0])
  t, back = s.sync_round(10.0, ends + 10, cuts + 10)
  assert t == 15.0 and back.tolist() == [True, False, False]
  assert s.row["updates_lost"] == 2
  t, back = availability.ClientSystem(None, 3, 0).sync_round(10.0, ends + 10, cuts + 10)
  assert t == 17.0 and back.tolist() == [True, True, False]
