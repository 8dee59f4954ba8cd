"""The run loop: one loop for one seed and for many seeds alike, with callbacks.

`run_loop(runner, lanes, callbacks)` advances the runner until every lane (one seed's outputs)
has `num_global_iters` rows. A *lane* is one seed: its config, its workdir and its rows. A
single-seed runner (`gas_jax.runners.Runner`) drives one lane; the runs axis
(`SeedsGasRunner`) drives one lane per seed, and one `run_iteration()` call returns the rows of
the seeds that finished a global iteration in it.

Wall times: `wall_time_s` of a row is the run's wall time when the row was made (from the start
of the loop, plus the wall time restored from a checkpoint); a lane's `walls` hold each global
iteration's own seconds (the runner's work and the evaluation since the lane's previous row, the
checkpoint and file writes after it left out), from which summary.json's `mean_iter_wall_s` and
`first_iter_wall_s` come; its `starts` mark the iterations each process timed first (restore and
compilation included), which `mean_iter_wall_s` leaves out.

Per global iteration of a lane the loop makes its row (the runner's fields), lets the callbacks
fill it in (`fill_row`: evaluation), stamps `wall_time_s`, and hands it to the callbacks
(`on_row`: metrics, progress); after each `run_iteration()` call `on_advance` (checkpoints). A
SIGTERM/SIGINT finishes the current call, lets the callbacks checkpoint, and stops
(`SystemExit(128 + signal)`). Callbacks (`gas_jax.callbacks`) follow pfl-research's
`pfl/callback/base.py`: every hook is optional.
"""
import contextlib
import dataclasses
import signal
import time
from typing import Any, Dict, List, Optional, Sequence

from absl import logging


@dataclasses.dataclass(eq=False)
class Lane:
  """One seed's run: its position in the loop, seed, config, workdir, and its rows so far."""
  index: int
  seed: int
  config: Any
  workdir: str
  rows: List[Dict] = dataclasses.field(default_factory=list)
  walls: List[float] = dataclasses.field(default_factory=list)  # seconds per global iteration
  starts: List[int] = dataclasses.field(default_factory=list)   # walls each process timed first
  mark: Optional[float] = None   # when its current global iteration started (None: not yet)

  @property
  def done(self) -> int:
    return len(self.rows)


class Callback:
  """Hooks of the run loop; each is optional."""

  def on_start(self, loop: "Loop") -> None:
    """Before the first iteration (restore checkpoints, open files, start timers)."""

  def fill_row(self, loop: "Loop", lane: Lane, row: Dict) -> None:
    """Adds fields to a lane's row before its wall time is taken (evaluation)."""

  def on_row(self, loop: "Loop", lane: Lane, row: Dict) -> None:
    """A lane finished a global iteration; `row` is complete."""

  def on_advance(self, loop: "Loop", finished: Sequence[Lane]) -> None:
    """After one `run_iteration()` call and its rows (checkpoints)."""

  def on_finish(self, loop: "Loop") -> None:
    """Every lane reached num_global_iters (summaries, final checkpoints)."""

  def on_close(self, loop: "Loop") -> None:
    """Always, last, also after an error or a stop request."""


class StopRequest:
  """SIGTERM/SIGINT -> finish the current global iteration, checkpoint, stop."""

  def __init__(self):
    self.signum = None
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:    # not the main thread
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    logging.warning("signal %d: checkpointing after this global iteration, then stopping", signum)
    self.signum = signum

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


class Loop:
  """The loop's state, shared with the callbacks."""

  def __init__(self, runner, lanes: List[Lane], num_iters: int, multi: bool):
    self.runner, self.lanes, self.num_iters = runner, lanes, num_iters
    self.multi = multi         # the runs axis: lanes in WORKDIR/seed<s>/, a summary over them
    self.advances = 0          # run_iteration() calls so far (the checkpoint step)
    self.wall_offset = 0.0     # wall seconds of the run before this process (resumed)
    self.start = time.time()
    self.stop: Optional[StopRequest] = None
    self.stack: Optional[contextlib.ExitStack] = None   # callbacks may enter contexts here
    self.result: Optional[Dict] = None                  # the summary (set by a callback)
    self.timed = set()         # lanes that timed a global iteration in this process

  def elapsed(self) -> float:
    return self.wall_offset + time.time() - self.start

  def unfinished(self) -> bool:
    return any(lane.done < self.num_iters for lane in self.lanes)


def _lane_infos(runner, multi: bool) -> Dict[int, Dict]:
  out = runner.run_iteration()
  return out if multi else {0: out}


def _advance(loop: Loop, callbacks: Sequence[Callback]) -> None:
  """One `run_iteration()` call: the rows of the lanes it finished, then `on_advance`."""
  now = time.time()
  for lane in loop.lanes:
    lane.mark = now if lane.mark is None else lane.mark
  infos = _lane_infos(loop.runner, loop.multi)
  loop.advances += 1
  finished = []
  for i in sorted(infos):
    lane, info = loop.lanes[i], dict(infos[i])
    row = dict(global_iteration=lane.done + 1, server_updates=info.pop("server_updates"),
               client_steps=info.pop("client_steps"),
               simulated_time_s=info.pop("simulated_time_s"), wall_time_s=None)
    for cb in callbacks:
      cb.fill_row(loop, lane, row)
    # An iteration's wall time: its runner work and evaluation (not the files or checkpoints
    # written after the previous one).
    if lane.index not in loop.timed:    # this process's first: restore, compilation
      loop.timed.add(lane.index)
      lane.starts.append(len(lane.walls))
    lane.walls.append(time.time() - lane.mark)
    lane.mark = None
    row["wall_time_s"] = loop.elapsed()
    row.update(info)
    lane.rows.append(row)
    for cb in callbacks:
      cb.on_row(loop, lane, row)
    finished.append(lane)
  for cb in callbacks:
    cb.on_advance(loop, finished)


def run_loop(runner, lanes: List[Lane], callbacks: Sequence[Callback], num_iters: int,
             multi: bool = False) -> Optional[Dict]:
  """Runs `runner` until every lane has `num_iters` rows; returns `loop.result`. `multi`: the
  runner is a runs-axis runner (`run_iteration()` returns {lane index: row fields})."""
  loop = Loop(runner, lanes, num_iters, multi)
  with contextlib.ExitStack() as stack:
    loop.stack = stack
    try:
      with StopRequest() as stop:     # the finish below keeps the default handlers
        loop.stop = stop
        for cb in callbacks:
          cb.on_start(loop)
        loop.start = time.time()   # wall_time_s counts from here (plus the restored wall time)
        while loop.unfinished():
          _advance(loop, callbacks)
          if stop.signum is not None:
            raise SystemExit(128 + stop.signum)
      for cb in callbacks:
        cb.on_finish(loop)
    finally:
      for cb in callbacks:
        cb.on_close(loop)
  return loop.result
