"""gas_jax.staleness: the row columns, and GAS's model/activation staleness on a hand-worked
schedule (scheduler level, and one resumed halfway from its JSON checkpoint)."""
import json

import pytest

from helpers.staleness_toys import FixedTimes, start_gas
from gas_jax import checkpoint, staleness
from gas_jax.runners import gas_runner
from gas_jax.system import scheduler as scheduler_lib

# The hand-worked GAS schedule: K = 3, C = 2, E = 2, compute 0 s, model upload 0 s, activation
# upload 1 s (clients 0 and 2) and 2.75 s (client 1, the straggler); slots start with [0, 1].
GAS_TIMES = dict(act=[1.0, 2.75, 1.0])
GAS_EVENTS = [  # (client, model_staleness, merged_activation_staleness)
    (0, -1, ()), (0, 0, (0, 0)), (1, -1, ()), (2, -1, (1, 0)), (2, 0, ()),   # iteration 1
    (0, -1, (1, 0)), (1, 1, ()), (0, 0, (3, 1))]                             # iteration 2


def test_columns_by_hand():
  cols = staleness.columns([1, 0, 1, 3], None)
  assert cols == dict(model_staleness_mean=1.25, model_staleness_max=3,
                      model_staleness_hist={"0": 1, "1": 2, "3": 1},
                      activation_staleness_mean=None, activation_staleness_max=None,
                      activation_staleness_hist=None)
  assert set(cols) == set(staleness.COLUMNS)
  assert staleness.columns([], [2])["model_staleness_hist"] is None
  assert staleness.columns([], [2])["activation_staleness_hist"] == {"2": 1}
  # string keys in increasing numeric order, strict JSON
  assert list(staleness.histogram([10, 2, 2, 0])) == ["0", "2", "10"]
  assert json.loads(json.dumps(cols)) == cols
  assert staleness.merge_hists([{"0": 1, "3": 2}, None, {"3": 1}]) == {0: 1, 3: 3}
  with pytest.raises(ValueError):
    staleness.columns([-1])


def _scheduler():
  sched = scheduler_lib.GasScheduler(FixedTimes(**GAS_TIMES), num_clients=3, participating=2,
                                     local_iters=2, seed=0)
  start_gas(sched, [0, 1])
  return sched


def _fields(events):
  return [(ev.client, ev.model_staleness, ev.merged_activation_staleness) for ev in events]


def test_gas_scheduler_hand_worked_schedule():
  """Derivation (spec §1.3-1.4 event loop; tau = client clocks, U = server updates, t =
  aggregations, U_d / t_d = U / t when the client's model was dispatched; an activation's
  staleness is U - U_d at its step (merged by update U + 1), an upload's is t - t_d):

    start: slot0 = c0 (tau 1), slot1 = c1 (tau 2.75); U_d = t_d = 0 for both.
    1. c0 @1:   act 0-0=0, buffer [0].                      tau0 = 2
    2. c0 @2:   act 0, buffer full -> update U=1 merges (0, 0). c0 uploads (E=2): model
                0-0=0. Replacement c2 (the only inactive) in slot0: t_d=0, U_d=1, tau2 = 3.
    3. c1 @2.75: act 1-0=1, buffer [1].                      tau1 = 5.5
    4. c2 @3:   act 1-1=0 -> update U=2 merges (1, 0).       tau2 = 4
    5. c2 @4:   act 2-1=1, buffer [1]. c2 uploads: model 0-0=0 -> aggregation t=1 (row 1).
                Replacement c0 in slot0: t_d=1, U_d=2, tau0 = 5.
    6. c0 @5:   act 2-2=0 -> update U=3 merges (1, 0) (the first from row 1).  tau0 = 6
    7. c1 @5.5: act 3-0=3, buffer [3]. c1 uploads: model 1-0=1. Replacement c2 in slot1:
                t_d=1, U_d=3, tau2 = 6.5.
    8. c0 @6:   act 3-2=1 -> update U=4 merges (3, 1). c0 uploads: model 1-1=0 -> t=2.
  Row 1: models [0, 0]; activations merged [0, 0, 1, 0]. Row 2: models [1, 0]; activations
  merged [1, 0, 3, 1].
  """
  sched = _scheduler()
  rows = [sched.next_iteration(), sched.next_iteration()]
  assert _fields(rows[0] + rows[1]) == GAS_EVENTS
  assert [len(r) for r in rows] == [5, 3]
  # the row columns the GAS runners write (`gas_runner.event_staleness`)
  assert gas_runner.event_staleness(rows[0]) == staleness.columns([0, 0], [0, 0, 1, 0])
  assert gas_runner.event_staleness(rows[1]) == dict(
      model_staleness_mean=0.5, model_staleness_max=1, model_staleness_hist={"0": 1, "1": 1},
      activation_staleness_mean=1.25, activation_staleness_max=3,
      activation_staleness_hist={"0": 1, "1": 2, "3": 1})


def test_gas_scheduler_resumes_with_the_same_staleness():
  """After row 1 the buffer holds one activation (staleness 1, merged in row 2): the
  checkpointed scheduler (JSON host state) gives the same events as an uninterrupted one."""
  sched = _scheduler()
  sched.next_iteration()
  saved = json.loads(json.dumps(checkpoint.to_json(sched.state_dict())))
  assert saved["pending"] == [1]
  resumed = scheduler_lib.GasScheduler(FixedTimes(**GAS_TIMES), 3, 2, 2, seed=0)
  resumed.load_state_dict(checkpoint.from_json(saved))
  assert _fields(resumed.next_iteration()) == GAS_EVENTS[5:]
