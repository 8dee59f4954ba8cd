"""Tests for gas_jax.system.scheduler.GasScheduler against a naive replay of spec §1.2-1.4.

The naive simulation below is written straight from the spec's pseudo-code (REF semantics):
argmin clock with ties to the earlier slot, weight tags = per-client counters wc, TW += U at
aggregation, replacement drawn uniformly from the inactive clients at the departing client's
clock. It draws from an identically seeded numpy generator with the same call sequence.
"""
import copy

import numpy as np
import pytest

from gas_jax.system import scheduler as scheduler_lib
from gas_jax.system import timing

K, C, E, B = 7, 3, 4, 32
FLOPS, ABITS, MBITS = 5_603_328, 131_072, 620_544
FIELDS = ("client", "slot", "counter_tag", "progress", "buf_pos", "server_update", "upload",
          "aggregate")


def _rate(d_km):
  pl = 128.1 + 37.6 * np.log10(d_km)
  return 1e7 * np.log2(1.0 + 0.2 * 10.0 ** (-pl / 10.0) / (1e7 * 3.981e-21))


def _naive(compute, distance, seed, num_events, qs=C, qc=C):
  """Spec §1.2 (steps 6-7) and §1.3 event loop; returns a list of dicts, one per client step.
  qs, qc: the activation / model buffer sizes (REF: both C; paper Algorithm 1: Q_s, Q_c)."""
  fc = [FLOPS / c for c in compute]                   # F_c / c_k
  ua = [B * ABITS / _rate(d) for d in distance]       # B A_bits / r_k
  um = [MBITS / _rate(d) for d in distance]           # Mbits_c / r_k
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5C4E]))
  order = [int(i) for i in rng.permutation(K)[:C]]
  tau = [0.0] * K
  for i in order:
    tau[i] = 0.0 + fc[i] + ua[i]
  wc = [1] * K
  count = [0] * K
  joined = [0] * K                  # aggregations before the client's model was dispatched
  tw, u, q_s, q_c, t = 1, 0, 0, 0, 0
  round_times = []
  events, ties = [], 0
  while len(events) < num_events:
    s = 0
    for p in range(1, C):            # strict <: ties keep the earlier position in `order`
      if tau[order[p]] < tau[order[s]]:
        s = p
    ties += sum(tau[order[p]] == tau[order[s]] for p in range(C)) > 1
    k = order[s]
    ev = dict(client=k, slot=s, counter_tag=wc[k], progress=joined[k] * E + count[k] + 1,
              buf_pos=q_s,
              server_update=False, upload=False, aggregate=False, iteration_time=0.0)
    q_s += 1
    wc[k] += 1
    tau[k] += fc[k]                  # client backward
    if q_s == qs:
      u += 1
      q_s = 0
      ev["server_update"] = True
    ev["time"] = tau[k]
    count[k] += 1
    if count[k] == E:
      ev["upload"] = True
      count[k] = 0
      q_c += 1
      tau[k] += um[k]
      round_times.append(tau[k])
      if q_c == qc:
        tw += u
        q_c = 0
        t += 1
        ev["aggregate"] = True
        ev["iteration_time"] = max(round_times)
        round_times = []
      inactive = sorted(set(range(K)) - set(order))
      j = int(rng.choice(inactive))
      order[s] = j
      wc[j] = tw
      joined[j] = t
      tau[j] = tau[k] + fc[j] + ua[j]
    else:
      tau[k] += fc[k] + ua[k]
    events.append(ev)
  return events, ties


def _scheduler(profiles, seed, **buffers):
  tm = timing.TimeModel(profiles=profiles, client_flops=FLOPS, activation_bits=ABITS,
                        client_model_bits=MBITS, batch_size=B)
  return scheduler_lib.GasScheduler(tm, K, C, E, seed, **buffers)


def _compare(events, expected):
  assert len(events) == len(expected)
  for i, (ev, ex) in enumerate(zip(events, expected)):
    got = {f: getattr(ev, f) for f in FIELDS}
    want = {f: ex[f] for f in FIELDS}
    assert got == want, f"event {i}: {got} != {want}"
    np.testing.assert_allclose(ev.time, ex["time"], rtol=1e-12, err_msg=f"event {i}")
    np.testing.assert_allclose(ev.iteration_time, ex["iteration_time"], rtol=1e-12,
                               err_msg=f"event {i}")


@pytest.mark.parametrize("seed", [0, 11])
def test_events_match_naive_simulation(seed):
  profiles = timing.draw_profiles(K, seed)
  sched = _scheduler(profiles, seed)
  events = [sched.next_event() for _ in range(300)]
  expected, _ = _naive(profiles.compute, profiles.distance, seed, 300)
  _compare(events, expected)
  assert sum(e["aggregate"] for e in expected) >= 15   # many replacements and aggregations


@pytest.mark.parametrize("qs, qc", [(2, 5), (5, 2), (1, 1)])
def test_buffer_sizes_match_naive_simulation(qs, qc):
  """Q_s and Q_c set apart from C (clients.activation_buffer / model_buffer): a server update
  after every Q_s-th step (buffer positions 0..Q_s-1), an aggregation at every Q_c-th upload."""
  profiles = timing.draw_profiles(K, 4)
  sched = _scheduler(profiles, 4, activation_buffer=qs, model_buffer=qc)
  events = [sched.next_event() for _ in range(300)]
  expected, _ = _naive(profiles.compute, profiles.distance, 4, 300, qs=qs, qc=qc)
  _compare(events, expected)
  assert [e.buf_pos for e in events[:2 * qs]] == list(range(qs)) * 2
  assert [i for i, e in enumerate(events) if e.server_update][:3] == [qs - 1, 2 * qs - 1,
                                                                       3 * qs - 1]
  uploads = np.cumsum([e.upload for e in events])
  aggs = [i for i, e in enumerate(events) if e.aggregate]
  assert len(aggs) >= 5 and list(uploads[aggs]) == [qc * (t + 1) for t in range(len(aggs))]


def test_events_match_naive_simulation_with_ties():
  # Identical clients: clocks tie exactly, so the earlier-slot rule decides the order.
  profiles = timing.ClientProfiles(compute=np.full(K, 3e9), distance=np.full(K, 0.4))
  sched = _scheduler(profiles, seed=5)
  events = [sched.next_event() for _ in range(300)]
  expected, ties = _naive(profiles.compute, profiles.distance, 5, 300)
  assert ties > 50
  _compare(events, expected)
  # The first round is slot order 0, 1, 2 (all initial clocks equal).
  assert [e.slot for e in events[:C]] == [0, 1, 2]


def test_global_invariants():
  profiles = timing.draw_profiles(K, 2)
  sched = _scheduler(profiles, 2)
  uploads_since_agg = 0
  prev_time = {}
  steps_in_part, joined_at = {}, {}
  events = []
  for i in range(400):
    before = sched.active.copy()
    ev = sched.next_event()
    events.append(ev)
    after = sched.active
    assert len(set(after.tolist())) == C and np.all((after >= 0) & (after < K))
    assert ev.client == before[ev.slot]
    assert ev.server_update == ((i + 1) % C == 0)
    assert ev.buf_pos == i % C
    # Paper's n = tE + e: e counts the client's own steps 1..E of this participation, t the
    # aggregations before its model was dispatched (a replacement starts from the newest).
    e = (ev.progress - 1) % E + 1
    assert e == steps_in_part.get(ev.client, 0) + 1
    assert (ev.progress - e) // E == joined_at.get(ev.client, 0)
    steps_in_part[ev.client] = e % E
    if ev.upload:
      uploads_since_agg += 1
      assert after[ev.slot] != ev.client            # the departing client is not re-drawn
      assert np.array_equal(np.delete(after, ev.slot), np.delete(before, ev.slot))
      # The replacement starts at the departing client's clock (incl. its model upload).
      j = after[ev.slot]
      np.testing.assert_allclose(
          sched.tau[j], ev.time + sched.tm.upload_model(ev.client) + sched.tm.compute(j)
          + sched.tm.upload_activation(j), rtol=1e-12)
      assert sched.wc[j] == sched.total_weight
      joined_at[int(j)] = sched.global_iters
      steps_in_part[int(j)] = 0
    else:
      assert np.array_equal(after, before)
    if ev.aggregate:
      assert ev.upload and uploads_since_agg == C
      uploads_since_agg = 0
    # A client's own clock never runs backwards.
    if ev.client in prev_time:
      assert ev.time > prev_time[ev.client]
    prev_time[ev.client] = ev.time
  # Each client's steps: E per participation, so uploads happen every E-th own step.
  assert sum(ev.aggregate for ev in events) == sched.global_iters
  assert sched.server_updates == 400 // C
  assert max(ev.progress for ev in events) > E     # replacements start past t = 0


def test_next_iteration_ends_at_aggregate():
  profiles = timing.draw_profiles(K, 4)
  sched = _scheduler(profiles, 4)
  expected, _ = _naive(profiles.compute, profiles.distance, 4, 400)
  flat = []
  for t in range(1, 6):
    events = sched.next_iteration()
    assert events[-1].aggregate
    assert not any(ev.aggregate for ev in events[:-1])
    assert sum(ev.upload for ev in events) == C
    assert sched.global_iters == t
    assert len(events) >= E          # at least E steps of one client
    flat.extend(events)
  # Every one of the 5 C uploads closes a participation of E distinct steps.
  assert len(flat) >= 5 * C * E
  _compare(flat, expected[:len(flat)])


def test_state_dict_round_trip():
  profiles = timing.draw_profiles(K, 9)
  sched = _scheduler(profiles, 9)
  for _ in range(101):
    sched.next_event()
  state = sched.state_dict()
  snapshot = copy.deepcopy(state)
  cont = [sched.next_event() for _ in range(150)]
  # The saved state is a snapshot: continuing the scheduler does not change it.
  assert state.keys() == snapshot.keys()
  for key, value in snapshot.items():
    if isinstance(value, np.ndarray):
      np.testing.assert_array_equal(state[key], value, err_msg=key)
    else:
      assert state[key] == value, key
  # A fresh scheduler (different seed and active set) continues identically after loading.
  other = _scheduler(profiles, 123)
  other.next_event()
  other.load_state_dict(state)
  again = [other.next_event() for _ in range(150)]
  assert again == cont
  # Loading into the original (which has moved on) rewinds it; the saved state was not aliased.
  sched.load_state_dict(state)
  assert [sched.next_event() for _ in range(150)] == cont
  assert sum(ev.upload for ev in cont) > 5
