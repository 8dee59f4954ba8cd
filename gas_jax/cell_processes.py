"""The processes of a grid's cells (`gas_jax.cells`).

`run_cells` runs the todo cells, `jobs` at a time, each process pinned to its share of the CPU
cores (`execution.core_slots`), with its output in the cell's log.txt, and with a time budget
starts no cell it cannot finish. Each attempt's wall time is kept in the cell's cell_wall.json
(`record_attempt`), so that a cell interrupted and finished in a later call knows its whole
cost. `exit_on_signals` wraps a launcher's main: SIGINT (Ctrl-C) or SIGTERM stops the running
cells' processes (each in a session of its own, so a terminal's Ctrl-C reaches only the
launcher) and ends the launcher with one line and exit status 128 + signal.
"""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from absl import logging

from gas_jax import execution, metrics
from gas_jax.cells import Cell, run_state, state
from gas_jax.errors import RunError


@dataclasses.dataclass
class Outcome:
  """What `run_cells` did: cells finished (name -> wall seconds), failed (log paths), and
  the ones the budget left for later."""
  finished: Dict[str, float] = dataclasses.field(default_factory=dict)
  failed: List[str] = dataclasses.field(default_factory=list)
  deferred: List[str] = dataclasses.field(default_factory=list)


WALL_FILE = "cell_wall.json"


def record_attempt(workdir: str, seconds: float) -> float:
  """Adds one attempt's wall seconds to WORKDIR/cell_wall.json; returns the cell's total so
  far (an interrupted cell's time is kept: the rerun that finishes it knows its whole cost)."""
  path = os.path.join(workdir, WALL_FILE)
  attempts = list(recorded_attempts(workdir) or []) + [round(float(seconds), 3)]
  metrics.atomic_write(path, json.dumps(dict(attempts_s=attempts)) + "\n")
  return float(sum(attempts))


def recorded_attempts(workdir: str) -> Optional[List[float]]:
  """The wall seconds of the cell's recorded attempts, None if none (or unreadable)."""
  try:
    with open(os.path.join(workdir, WALL_FILE)) as f:
      attempts = json.load(f)["attempts_s"]
    return [float(a) for a in attempts]
  except (OSError, ValueError, KeyError, TypeError):
    return None


_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class Interrupted(Exception):
  """SIGINT or SIGTERM reached a launcher (`exit_on_signals`); `detail` says what was stopped."""

  def __init__(self, signum: int):
    super().__init__(signum)
    self.signum, self.detail = signum, ""


def _raise_interrupted(signum, frame):  # noqa: ARG001
  raise Interrupted(signum)


def exit_on_signals(main: Callable) -> Callable:
  """A launcher's main, ended by SIGINT (Ctrl-C) or SIGTERM with one line and exit status
  128 + signal, never a traceback; `run_cells` stops its running cells first."""
  def wrapped(argv):
    old = {sig: signal.signal(sig, _raise_interrupted) for sig in _SIGNALS}
    try:
      return main(argv)
    except Interrupted as e:
      print(f"error: interrupted by {signal.Signals(e.signum).name}{e.detail}", file=sys.stderr,
            flush=True)
      sys.exit(128 + e.signum)
    finally:
      for sig, handler in old.items():
        signal.signal(sig, handler)
  return wrapped


class _Job:
  """A cell's commands run one after the other in one process slot, in a session of their own
  (a Ctrl-C in the terminal reaches the launcher, which stops them: `stop`)."""

  def __init__(self, cell: Cell, slot: int, cores):
    self.cell, self.slot, self.t0 = cell, slot, time.time()
    commands = []
    if run_state(cell) != "done":
      commands.append([sys.executable, "-m", "gas_jax.main", *cell.argv,
                       f"--workdir={cell.workdir}"])
    commands += [list(c) for c in cell.after]
    self.commands = commands
    self.cores = cores
    os.makedirs(cell.workdir, exist_ok=True)
    self.log = open(os.path.join(cell.workdir, "log.txt"), "a")
    self.proc = None
    self.returncode = None
    if self.commands:
      self._next()

  def _next(self):
    cmd = self.commands.pop(0)
    self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                 preexec_fn=self._child_setup, start_new_session=True)

  def _child_setup(self):
    """In the child: the signals `_run` blocked around its start unblocked, its cores."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    if hasattr(os, "sched_setaffinity"):    # (not on macOS: no pinning)
      os.sched_setaffinity(0, self.cores)

  def poll(self) -> bool:
    """Whether the job has ended (its returncode is then set)."""
    if self.proc is not None and self.proc.poll() is None:
      return False
    if self.proc is not None and self.proc.returncode == 0 and self.commands:
      self._next()
      return False
    self.returncode = 0 if self.proc is None else self.proc.returncode
    self.log.close()
    return True

  def stop(self, grace_s: float = 30.0) -> None:
    """Ends the running command (SIGTERM to its process group, SIGKILL after `grace_s`) and
    records the attempt's wall time; the cell resumes from its checkpoint when run again."""
    if self.proc is not None and self.proc.poll() is None:
      for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
          os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
          break
        try:
          self.proc.wait(timeout=wait)
          break
        except subprocess.TimeoutExpired:
          continue
    record_attempt(self.cell.workdir, time.time() - self.t0)
    self.log.close()


def estimate_s(cell: Cell, times: Sequence[Tuple[str, float]]) -> Optional[float]:
  """The wall time to expect of `cell`: the longest measured cell of its kind, else the
  longest measured cell of any kind (methods differ: the longest, not the mean, so that a
  budget is not overrun), None without any measurement."""
  same = [t for k, t in times if k == cell.kind]
  every = [t for _, t in times]
  return max(same) if same else (max(every) if every else None)


def run_cells(cells: Sequence[Cell], jobs: int = 1, budget_s: Optional[float] = None,
              prior_times: Sequence[Tuple[str, float]] = (),
              on_finished: Optional[Callable[[Cell, float], None]] = None) -> Outcome:
  """Runs the cells (todo ones only, in order), `jobs` at a time; `on_finished(cell, wall_s)`
  as each one succeeds (an exception there fails that cell, not the others).

  With `budget_s`, no cell starts unless it is expected to end within the budget (counted from
  this call): the expectation is `estimate_s` over `prior_times` ((kind, seconds) of cells
  measured before, e.g. in an earlier slot) and the cells finished in this call; with no
  measurement at all, the first cell starts alone (unless the budget is already spent) and the
  next ones wait for its time.
  """
  out = Outcome()
  dirs = [os.path.abspath(c.workdir) for c in cells]
  if len(set(dirs)) < len(dirs):
    raise RunError("two cells share a workdir: " +
                   ", ".join(sorted({d for d in dirs if dirs.count(d) > 1})))
  todo = [c for c in cells if state(c) == "todo"]
  times = list(prior_times)
  start = time.time()
  slots = execution.core_slots(jobs)
  free = list(range(len(slots)))
  running: List[_Job] = []
  logging.info("job slots on CPU cores %s (%d cores available); %d cell(s) to run", slots,
               execution.available_cores(), len(todo))
  try:
    _run(todo, running, free, slots, times, start, budget_s, on_finished, out)
  except Interrupted as e:
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # (a second Ctrl-C must not cut this short)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for job in running:
      job.stop()
    names = [job.cell.name for job in running]
    e.detail = (f": stopped {len(names)} running cell(s)" +
                (f" ({', '.join(names)}; each resumes from its last checkpoint, its time so "
                 "far kept in cell_wall.json)" if names else "") +
                "; run the same command again to go on")
    raise
  return out


def _run(todo, running, free, slots, times, start, budget_s, on_finished, out) -> None:
  """`run_cells`' loop: starts todo cells in free slots (within the budget), collects ended
  ones (`running` is kept current, so an interruption knows what to stop)."""
  while todo or running:
    while todo and free:
      if budget_s is not None:
        estimate = estimate_s(todo[0], times)
        elapsed = time.time() - start
        if estimate is None and running:
          break       # wait for the first measurement before starting another cell
        # A running cell started earlier may still finish; a new one needs its whole estimate.
        if elapsed + (estimate or 0.0) > budget_s or elapsed >= budget_s:
          out.deferred += [c.name for c in todo]
          logging.info("budget: %.0f s of %.0f s used, the next cell takes ~%s s: %d cell(s) "
                       "left for later", elapsed, budget_s,
                       "?" if estimate is None else f"{estimate:.0f}", len(todo))
          todo.clear()
          break
      cell = todo.pop(0)
      slot = free.pop(0)
      # Signals wait until the job is in `running` (else its process could be left behind).
      signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
      try:
        running.append(_Job(cell, slot, slots[slot]))
      finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    time.sleep(0.2)
    for job in list(running):
      if not job.poll():
        continue
      running.remove(job)
      free.append(job.slot)
      took = time.time() - job.t0
      total = record_attempt(job.cell.workdir, took)   # this attempt and any interrupted ones
      ok = job.returncode == 0
      if ok:
        times.append((job.cell.kind, total))
        logging.info("%s done in %.0f s (total %.0f s)", job.cell.name, took,
                     time.time() - start)
        if on_finished is not None:
          try:
            on_finished(job.cell, total)
          except Exception as e:  # noqa: BLE001  (reported as this cell's failure)
            logging.error("%s: finished, but %s: %s", job.cell.name, type(e).__name__, e)
            ok = False
      if ok:
        out.finished[job.cell.name] = total
      else:
        out.failed.append(os.path.join(job.cell.workdir, "log.txt"))
        if job.returncode:
          logging.info("%s FAILED (exit %d) in %.0f s", job.cell.name, job.returncode, took)
