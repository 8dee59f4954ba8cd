"""Clients that come and go (issue #29, docs/scenarios.md): the shared `ClientSystem` and GAS's
schedule under a trace, worked by hand; trace files and their one-line errors."""
import json
import math

import numpy as np
import pytest

from gas_jax.errors import ConfigError, RunError
from gas_jax.system import availability
from gas_jax.system.scheduler import Event, GasScheduler, SlotReset

INF = math.inf


class UnitTimes:
  """Every client: compute 1 s, activation upload 1 s, model upload 1 s."""
  def compute(self, k):
    return 1.0

  def upload_activation(self, k):
    return 1.0

  def upload_model(self, k):
    return 1.0


# Client 0 has two online intervals, clients 1 and 2 one each.
TRACE = [[(0.0, 3.0), (9.0, 30.0)], [(4.0, 5.5)], [(6.0, 30.0)]]


def _hand_scheduler():
  sys = availability.ClientSystem(UnitTimes(), 3, seed=0, availability="trace", intervals=TRACE)
  return sys, GasScheduler(UnitTimes(), 3, participating=1, local_iters=1, seed=0, system=sys)


def _brief(ev):
  if isinstance(ev, SlotReset):
    return ("reset", ev.client, ev.time)
  return ("step", ev.client, ev.time, ev.upload, ev.aggregate, ev.iteration_time)


def test_gas_schedule_under_a_trace_worked_by_hand():
  """K=3 clients, C=1 slot, E=1; every duration 1 s, so a client dispatched at t sends its
  activation by t+2, ends its backward at t+3 and its model arrives at t+4. Trace: client 0
  online [0, 3) and [9, 30), client 1 [4, 5.5), client 2 [6, 30).

  Global iteration 1:
  - t=0: only client 0 is online: dispatched (cut at 3, its offline time).
  - t=2: its activation arrives (2 <= 3): a step (server update, C=1); backward ends at 3, but
    its model would arrive at 4 > 3: the upload is lost (event with upload=False).
  - t=3: the cut: 1 update lost. Nobody is online at 3 -> the slot waits for the first client
    online: min(next online of 0, 1, 2) = min(9, 4, 6) = 4.
  - t=4: client 1 (the only one online) takes the slot: SlotReset(1, t=4); its cut is 5.5, its
    activation would arrive at 6 > 5.5.
  - t=5.5: cut before the activation arrived: lost (no step; 2 lost). Nobody online at 5.5 ->
    wait for min(9, never, 6) = 6.
  - t=6: client 2 takes the slot: SlotReset(2, t=6); activation at 8, backward ends at 9, model
    at 10 <= 30: upload and aggregation (C=1), iteration time 10. Its replacement at 10: the
    online clients outside the slot = {0} (online again from 9): client 0 dispatched at 10.
  Row: clients online at 10 = {0, 2}: 2; dispatched 4 (0, 1, 2, 0); lost 2.
  Iteration 2: client 0 from 10: step ending at 13, model at 14 (aggregation); client 2 takes
  over at 14. Then 2 (14 -> 18), 0 (18 -> 22), 2 (22 -> 26), 0 (26 -> model at 30 <= its cut 30).
  (dispatches at 14, 18, 22, 26: 8 in all). At 30 every interval has ended: nobody takes the
  slot, no client can come online again, and the next iteration stops with one line.
  """
  sys, sched = _hand_scheduler()
  first = sched.next_iteration()
  assert [_brief(e) for e in first] == [
      ("step", 0, 3.0, False, False, 0.0), ("reset", 1, 4.0), ("reset", 2, 6.0),
      ("step", 2, 9.0, True, True, 10.0)]
  assert all(e.server_update for e in first if isinstance(e, Event))
  assert sys.take_row(10.0) == dict(clients_online=2, clients_dispatched=4, updates_lost=2)
  assert [_brief(e) for e in sched.next_iteration()] == [("step", 0, 13.0, True, True, 14.0)]
  assert sys.take_row(14.0) == dict(clients_online=2, clients_dispatched=1, updates_lost=0)
  ends = [sched.next_iteration()[-1].iteration_time for _ in range(4)]
  assert ends == [18.0, 22.0, 26.0, 30.0]
  with pytest.raises(RunError, match="no client can ever come online again"):
    sched.next_iteration()
  assert sys.totals == dict(clients_dispatched=8, updates_lost=2)


def test_hand_schedule_resumes_from_its_state():
  _, a = _hand_scheduler()
  a.next_iteration()
  state = a.state_dict()
  rest = [[_brief(e) for e in a.next_iteration()] for _ in range(3)]
  sys_b, b = _hand_scheduler()
  b.load_state_dict(state)
  assert [[_brief(e) for e in b.next_iteration()] for _ in range(3)] == rest
  assert sys_b.totals == a.sys.totals


def test_markov_is_the_same_for_a_seed_whatever_the_query_order():
  def make():
    return availability.ClientSystem(UnitTimes(), 4, seed=7, availability="markov",
                                     mean_online_s=2.0, mean_offline_s=1.0)
  a, b = make(), make()
  times = np.linspace(0, 200, 401)
  fwd = [[a.online(k, t) for t in times] for k in range(4)]
  bwd = [[b.online(k, t) for t in times[::-1]][::-1] for k in range(4)]
  assert fwd == bwd
  share = np.mean(fwd)
  assert 0.5 < share < 0.85      # stationary online share 2 / (2 + 1)
  c = availability.ClientSystem(UnitTimes(), 4, seed=8, availability="markov",
                                mean_online_s=2.0, mean_offline_s=1.0)
  assert [[c.online(k, t) for t in times] for k in range(4)] != fwd
  for k in range(4):        # next_online / offline_at agree with online()
    for t in (0.3, 17.0, 99.9):
      n = a.next_online(k, t)
      assert a.online(k, n) and (n == t or not a.online(k, (t + n) / 2))
      assert not a.online(k, a.offline_at(k, n))


def test_dropout_draws_per_client_and_dispatch():
  """The n-th dispatch of client k fails the same way in every method (seeded by k and n); p=0
  never cuts; about p of the dispatches are cut, at a point inside the work."""
  def cuts(p, order):
    s = availability.ClientSystem(UnitTimes(), 3, seed=1, dropout=p)
    return {(k, n): s.dispatch(k, 10.0, 4.0) for n, k in order}
  order = [(n, k) for n in range(200) for k in range(3)]
  a, b = cuts(0.3, order), cuts(0.3, sorted(order, key=lambda x: (x[1], x[0])))
  assert a == b
  cut = [v for v in a.values() if v < INF]
  assert 0.2 < len(cut) / len(a) < 0.4 and all(10.0 <= v < 14.0 for v in cut)
  assert all(v == INF for v in cuts(0.0, order).values())


def test_redrawn_speeds_change_by_period_only():
  from gas_jax.system import timing  # noqa: PLC0415
  prof = timing.draw_profiles(5, 0)
  tm = timing.TimeModel(profiles=prof, client_flops=1e6, activation_bits=1e3,
                        client_model_bits=1e4, batch_size=2)
  s = availability.ClientSystem(tm, 5, 0, speed="lognormal", sigma=1.0, redraw_s=2.0)
  assert s.tm_at(1.9) is tm and s.tm_at(2.0) is s.tm_at(3.9)
  assert not np.array_equal(s.tm_at(2.0).profiles.compute, s.tm_at(4.0).profiles.compute)
  np.testing.assert_array_equal(s.tm_at(2.0).profiles.distance, prof.distance)
  assert availability.ClientSystem(tm, 5, 0).tm_at(1e9) is tm


def _write(tmp_path, name, text):
  p = tmp_path / name
  p.write_text(text)
  return str(p)


def test_trace_formats_json_and_csv(tmp_path):
  j = _write(tmp_path, "t.json", json.dumps({"clients": {"2": [[5, 6], [0, 1]], "0": [[0, 2]]}}))
  c = _write(tmp_path, "t.csv", "client,start,end\n2,5,6\n0,0,2\n\n2,0,1\n")
  want = [[(0.0, 2.0)], [], [(0.0, 1.0), (5.0, 6.0)]]
  assert availability.read_trace(j, 3) == want == availability.read_trace(c, 3)


BAD_TRACES = [
    ("t.json", "", "empty"),
    ("t.csv", "client,start,end\n", "no client is ever available"),
    ("t.json", '{"clients": {"0": []}}', "no client is ever available"),
    ("t.json", '{"clients": {"3": [[0, 1]]}}', "unknown client '3'"),
    ("t.csv", "client,start,end\n0,0,1\nx,0,1\n", "line 3"),
    ("t.csv", "client,start,end\n0,0,1\n7,0,1\n", "line 3: unknown client"),
    ("t.csv", "client,start,end\n0,-1,1\n", "line 2: interval [-1, 1)"),
    ("t.csv", "client,start,end\n0,2,1\n", "line 2: interval [2, 1)"),
    ("t.csv", "client,start,end\n0,0,2\n1,0,1\n0,1,3\n", "line 4: client 0's interval"),
    ("t.csv", "who,when\n0,1\n", "line 1: the header"),
    ("t.json", '{"clients": [1]}', "expected"),
    ("t.json", "{not json", "not JSON"),
]


@pytest.mark.parametrize("name,text,needle", BAD_TRACES)
def test_bad_traces_fail_in_one_line(tmp_path, name, text, needle):
  path = _write(tmp_path, name, text)
  with pytest.raises(ConfigError) as e:
    availability.read_trace(path, 3)
  msg = str(e.value)
  assert needle in msg and "system.trace" in msg and path in msg and "\n" not in msg, msg
