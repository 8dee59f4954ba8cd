"""Q_s and Q_c set apart from C (clients.activation_buffer / model_buffer) through every way a
GAS run executes: event by event, cohorts, and the runs axis (config.seeds).

Digits with generation on and every label topped up to an equal count (stats.gen_balance=
"equal", so the packed server sizes follow Q_s B too), C = 10, Q_s = 4, Q_c = 7, E = 4, 2 global
iterations. Event by event is the reference (its schedule is checked against the naive
simulation in tests/system/test_scheduler.py, its steps against the plain oracle in
tests/algorithms/test_oracle_gas.py); cohorts and the runs axis must give its numbers
(tests/helpers/same_run.py: identical accuracies, losses and models within 1e-5).
"""
import json
import os

import pytest

from configs import digits
from gas_jax import train
from helpers import same_run as eq

Q_S, Q_C, T = 4, 7, 2


def _config(**kw):
  c = digits.get_config()
  c.num_global_iters = c.checkpoint_every = T
  c.clients.local_iters = 4
  c.clients.activation_buffer, c.clients.model_buffer = Q_S, Q_C
  c.stats.gen_balance = "equal"
  c.execution.cohort_size = 1
  for k, v in kw.items():
    node = c
    *path, last = k.split("__")
    for p in path:
      node = node[p]
    node[last] = v
  return c


@pytest.fixture(scope="module")
def event_by_event(tmp_path_factory):
  """Seeds 0 and 1, event by event, each a run of its own."""
  root = tmp_path_factory.mktemp("events")
  for s in (0, 1):
    train.train_and_evaluate(_config(seed=s), str(root / f"seed{s}"))
  return root


def test_buffer_sizes_reach_the_run(event_by_event):
  """The path is the one named: a server update every Q_s client steps, generation on;
  config.json keeps both fields (Q_c's aggregations: tests/system/test_scheduler.py)."""
  rows = eq.columns(str(event_by_event / "seed0"))
  assert [r["server_updates"] for r in rows] == [r["client_steps"] // Q_S for r in rows]
  assert rows[-1]["generated_per_update"] > 0
  with open(os.path.join(event_by_event, "seed0", "config.json")) as f:
    clients = json.load(f)["clients"]
  assert (clients["activation_buffer"], clients["model_buffer"]) == (Q_S, Q_C)


def test_cohorts_equal_event_by_event(event_by_event, tmp_path):
  train.train_and_evaluate(_config(execution__cohort_size=0), str(tmp_path))
  eq.assert_same_run(str(event_by_event / "seed0"), str(tmp_path))


@pytest.mark.parametrize("vmapped, cohort", [
    (0, 1), pytest.param(1, 0, marks=pytest.mark.slow)], ids=["loop", "vmapped_cohorts"])
def test_runs_axis_equals_separate_runs(event_by_event, tmp_path, vmapped, cohort):
  c = _config(seeds=(0, 1), execution__vmap_seeds=vmapped, execution__cohort_size=cohort)
  train.train_and_evaluate(c, str(tmp_path))
  for s in (0, 1):
    eq.assert_same_run(str(event_by_event / f"seed{s}"), str(tmp_path / f"seed{s}"),
                       2e-5 if vmapped else 1e-5)
