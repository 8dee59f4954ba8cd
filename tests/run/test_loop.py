"""The run loop (`gas_jax.loop`) with fake runners: hook order, lanes, stop requests, errors."""
import signal

import pytest

from gas_jax import loop as loop_lib
from gas_jax.loop import Callback, Lane, run_loop


class FakeRunner:
  """One lane: global iteration n reports n server updates, 10 n client steps, n/2 s."""

  def __init__(self):
    self.n = 0

  def run_iteration(self):
    self.n += 1
    return dict(server_updates=self.n, client_steps=10 * self.n, simulated_time_s=self.n / 2,
                client_loss=1.0 / self.n)

  def eval_params(self, *lane):
    return lane


class FakeSeeds:
  """Two lanes: lane 0 finishes an iteration on every call, lane 1 on every other call."""

  def __init__(self):
    self.calls, self.done = 0, [0, 0]

  def run_iteration(self):
    self.calls += 1
    out = {}
    for lane, every in ((0, 1), (1, 2)):
      if self.calls % every == 0 and self.done[lane] < 3:
        self.done[lane] += 1
        out[lane] = dict(server_updates=self.done[lane], client_steps=0,
                         simulated_time_s=float(self.done[lane]))
    return out


class Recorder(Callback):
  def __init__(self, log, stop_at=None):
    self.log, self.stop_at = log, stop_at

  def on_start(self, loop):
    self.log.append("start")

  def fill_row(self, loop, lane, row):
    assert row["wall_time_s"] is None          # filled before the wall time is taken
    row["test_accuracy"] = 0.5
    self.log.append(("fill", lane.index, row["global_iteration"]))

  def on_row(self, loop, lane, row):
    assert row["wall_time_s"] >= 0 and row["test_accuracy"] == 0.5
    self.log.append(("row", lane.index, row["global_iteration"]))
    if self.stop_at == (lane.index, row["global_iteration"]):
      loop.stop.signum = signal.SIGTERM

  def on_advance(self, loop, finished):
    self.log.append(("advance", loop.advances, [lane.index for lane in finished]))

  def on_finish(self, loop):
    self.log.append("finish")
    loop.result = dict(rows=[lane.done for lane in loop.lanes])

  def on_close(self, loop):
    self.log.append("close")


def test_one_lane_hook_order_and_rows():
  log, lane = [], Lane(0, 7, None, "w")
  result = run_loop(FakeRunner(), [lane], [Recorder(log)], num_iters=2)
  assert result == dict(rows=[2])
  assert log == ["start", ("fill", 0, 1), ("row", 0, 1), ("advance", 1, [0]),
                 ("fill", 0, 2), ("row", 0, 2), ("advance", 2, [0]), "finish", "close"]
  assert list(lane.rows[1]) == ["global_iteration", "server_updates", "client_steps",
                                "simulated_time_s", "wall_time_s", "test_accuracy",
                                "client_loss"]
  assert [(r["global_iteration"], r["server_updates"], r["client_steps"]) for r in lane.rows] \
      == [(1, 1, 10), (2, 2, 20)]


def test_lanes_finish_at_their_own_pace():
  log = []
  lanes = [Lane(0, 0, None, "a"), Lane(1, 1, None, "b")]
  run_loop(FakeSeeds(), lanes, [Recorder(log)], num_iters=3, multi=True)
  assert [lane.done for lane in lanes] == [3, 3]
  advances = [e for e in log if isinstance(e, tuple) and e[0] == "advance"]
  assert advances[:4] == [("advance", 1, [0]), ("advance", 2, [0, 1]), ("advance", 3, [0]),
                          ("advance", 4, [1])]
  assert log[-2:] == ["finish", "close"]


def test_stop_request_ends_after_the_advance_hooks():
  log = []
  with pytest.raises(SystemExit) as e:
    run_loop(FakeRunner(), [Lane(0, 0, None, "w")], [Recorder(log, stop_at=(0, 2))],
             num_iters=5)
  assert e.value.code == 128 + signal.SIGTERM
  assert log[-2:] == [("advance", 2, [0]), "close"]      # checkpointed, closed, no finish


def test_errors_still_close_the_callbacks():
  class Broken(FakeRunner):
    def run_iteration(self):
      raise FloatingPointError("non-finite client loss at global iteration 1")
  log = []
  with pytest.raises(FloatingPointError):
    run_loop(Broken(), [Lane(0, 0, None, "w")], [Recorder(log)], num_iters=2)
  assert log == ["start", "close"]


def test_a_finished_run_goes_straight_to_finish():
  log, lane = [], Lane(0, 0, None, "w", rows=[{}, {}])
  run_loop(FakeRunner(), [lane], [Recorder(log)], num_iters=2)
  assert log == ["start", "finish", "close"]
  assert loop_lib.StopRequest().signum is None


def test_a_runs_axis_checkpoint_of_the_previous_layout_is_upgraded():
  """Host items written by the old multi-seed driver (pending outputs and elapsed time beside
  the runner's state, 3-tuples of server outputs) load in the new layout."""
  from gas_jax.callbacks import _upgrade   # noqa: PLC0415
  old = dict(runner=dict(schedulers=[], client_steps=[3, 4]), client_hist=[[[0.5, True]], []],
             server_hist=[[[0.7, True, 2.0]], [[0.6, True, 1.0, 2]]], walls=[[1.0], [2.0]],
             last_end=[1.0, 2.0], elapsed=12.5, rows=[1, 1])
  new = _upgrade(old, multi=True)
  assert new["wall_time_s"] == 12.5 and new["rows"] == [1, 1] and new["walls"] == [[1.0], [2.0]]
  assert new["runner"]["client_hist"] == [[[0.5, True]], []]
  assert new["runner"]["server_hist"] == [[[0.7, True, 2.0, 0]], [[0.6, True, 1.0, 2]]]
  assert new["runner"]["client_steps"] == [3, 4]
  single = dict(runner=dict(client_steps=3), wall_time_s=4.0)     # single runs: unchanged
  assert _upgrade(single, multi=False) is single


def test_iteration_walls_leave_out_what_happens_after_a_row():
  """A lane's wall time per iteration counts its runner work and evaluation, not the
  checkpoint written after the previous row."""
  import time   # noqa: PLC0415

  class SlowAdvance(Callback):
    def on_advance(self, loop, finished):
      time.sleep(0.2)         # a slow checkpoint

  lane = Lane(0, 0, None, "w")
  run_loop(FakeRunner(), [lane], [SlowAdvance()], num_iters=3)
  assert len(lane.walls) == 3 and max(lane.walls) < 0.1
  assert lane.rows[-1]["wall_time_s"] >= 0.4     # the run's clock does include it
