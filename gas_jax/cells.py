"""Cells of an experiment grid, each run as its own `python -m gas_jax.main` process.

The launchers (`launch/compare.py`, `launch/privacy.py`, `launch/campaign.py`) share this: a
cell is a workdir with the config its run must hold; it is "done" when that workdir's
summary.json records this very config finished, "todo" when it is empty or holds an unfinished
run of this config (which then resumes from its checkpoint), and refused otherwise (a run of
other overrides is never reused or overwritten). `run_cells` runs the todo cells, `jobs` at a
time, each process pinned to its share of the CPU cores (`execution.core_slots`), with its
output in the cell's log.txt, and with a time budget starts no cell it cannot finish.
"""
import dataclasses
import os
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from absl import logging

from gas_jax import config as config_lib
from gas_jax import execution, report
from gas_jax import workdir as workdir_lib


@dataclasses.dataclass
class Cell:
  """One run of the grid.

  Attributes:
    name: how the logs call it (e.g. "shard2/gas/seed0").
    workdir: its run folder.
    config: the resolved config its config.json must hold.
    argv: the arguments of `python -m gas_jax.main` (--config=..., overrides), without --workdir.
    after: further commands (argv lists, run in the cell's workdir's process slot) once the run
      has finished, e.g. an attack on it; `after_done` says whether they are still needed.
    kind: cells of one kind are expected to take as long as each other (the budget's
      estimate, `estimate_s`), e.g. "fmnist/gas".
  """
  name: str
  workdir: str
  config: object
  argv: List[str]
  after: List[List[str]] = dataclasses.field(default_factory=list)
  after_done: Callable[[], bool] = lambda: True
  kind: str = ""


def partition_flags(config, label: str) -> List[str]:
  """shard2 -> the data.partition/shards/alpha flags of a cell (checked by
  config.apply_partition_arg, which raises ConfigError for a bad label)."""
  cfg = config.copy_and_resolve_references()
  config_lib.apply_partition_arg(cfg, label)
  d = cfg.data
  return [f"--config.data.partition={d.partition}", f"--config.data.shards={d.shards}",
          f"--config.data.alpha={d.alpha}"]


def grid_config(config, partition: str, method: str, seed: int):
  """The config a (partition, method, seed) cell runs with (what its config.json must hold)."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.algorithm, c.seed = method, seed
  config_lib.apply_partition_arg(c, partition)
  return c


def run_state(cell: Cell) -> str:
  """'done' (finished with this config), 'todo', or why the cell's workdir cannot be used."""
  wd = cell.workdir
  stored = workdir_lib.read_stored_config(wd) if os.path.isdir(wd) else None
  if stored is not None:
    diff = workdir_lib.differences(stored, cell.config.to_dict(), workdir_lib.done_iterations(wd))
    if diff:
      return f"holds a run with another config ({'; '.join(diff[:4])})"
  if workdir_lib.finished_summary(wd, cell.config.num_global_iters) is not None:
    return "done"
  return "todo"


def packed_state(cell: Cell) -> str:
  """Like run_state, for a cell kept only as its packed result (`report.packed_path`):
  'done' if it records this config finished, 'missing' if there is none."""
  packed = report.read_packed(cell.workdir)
  if packed is None:
    return "missing"
  diff = workdir_lib.differences(packed["config"], cell.config.to_dict(),
                                 packed["summary"].get("global_iterations", 0))
  if diff:
    return f"holds a run with another config ({'; '.join(diff[:4])})"
  if packed["summary"].get("global_iterations") != cell.config.num_global_iters:
    return "missing"
  return "done"


def state(cell: Cell) -> str:
  """run_state, with a finished run whose `after` commands are still needed counted 'todo'."""
  s = run_state(cell)
  return "todo" if s == "done" and not cell.after_done() else s


def refused(states: Dict, cells_by_key: Dict) -> List[str]:
  """Logs every cell whose workdir holds another run (state not 'todo'/'done'/'missing') and
  returns their workdirs: the launchers report them as failed and never run them."""
  out = []
  for k, st in states.items():
    if st not in ("todo", "done", "missing"):
      logging.error("%s %s: not run; use another --workdir", cells_by_key[k].workdir, st)
      out.append(cells_by_key[k].workdir)
  return out


def finish(paths: Dict[str, str], failed: Sequence[str]) -> None:
  """A launcher's end: prints the table it wrote, logs its files, exits non-zero naming the
  failed cells if any."""
  with open(paths["table"]) as f:
    print(f.read())
  logging.info("wrote %s", ", ".join(paths.values()))
  if failed:
    sys.exit("error: failed cells (see their logs or the lines above): " + ", ".join(failed))


def user_args(argv: Sequence[str], own: Sequence[str], script: str):
  """The --config=... argument and the --config.x=v overrides of a launcher's command line, as
  given; the fields the launcher sets per cell (`own`) are dropped with a warning."""
  config_arg, overrides, it = None, [], iter(argv)
  for a in it:
    if a == "--config":
      config_arg = "--config=" + next(it)
    elif a.startswith("--config="):
      config_arg = a
    elif a.startswith("--config."):
      if "=" not in a:
        a = a + "=" + next(it)
      if a.split("=", 1)[0] in own:
        logging.warning("ignoring %s: %s sets it per cell", a, script)
      else:
        overrides.append(a)
  return config_arg, overrides


def cache_args(root: str, overrides: Sequence[str]) -> List[str]:
  """The XLA compilation cache shared by a grid's cells (DIR/xla_cache), unless set."""
  key = "--config.execution.compilation_cache_dir"
  if any(a.startswith(key) for a in overrides):
    return []
  return [f"{key}={os.path.abspath(os.path.join(root, 'xla_cache'))}"]


@dataclasses.dataclass
class Outcome:
  """What `run_cells` did: cells finished (name -> wall seconds), failed (log paths), and
  the ones the budget left for later."""
  finished: Dict[str, float] = dataclasses.field(default_factory=dict)
  failed: List[str] = dataclasses.field(default_factory=list)
  deferred: List[str] = dataclasses.field(default_factory=list)


class _Job:
  """A cell's commands run one after the other in one process slot."""

  def __init__(self, cell: Cell, slot: int, cores):
    self.cell, self.slot, self.t0 = cell, slot, time.time()
    commands = []
    if run_state(cell) != "done":
      commands.append([sys.executable, "-m", "gas_jax.main", *cell.argv,
                       f"--workdir={cell.workdir}"])
    commands += [list(c) for c in cell.after]
    self.commands = commands
    self.pin = ((lambda: os.sched_setaffinity(0, cores))
                if hasattr(os, "sched_setaffinity") else None)   # (not on macOS: no pinning)
    os.makedirs(cell.workdir, exist_ok=True)
    self.log = open(os.path.join(cell.workdir, "log.txt"), "a")
    self.proc = None
    self.returncode = None
    self._next()

  def _next(self):
    cmd = self.commands.pop(0)
    self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                 preexec_fn=self.pin)

  def poll(self) -> bool:
    """Whether the job has ended (its returncode is then set)."""
    if self.proc.poll() is None:
      return False
    if self.proc.returncode == 0 and self.commands:
      self._next()
      return False
    self.returncode = self.proc.returncode
    self.log.close()
    return True


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
  todo = [c for c in cells if state(c) == "todo"]
  times = list(prior_times)
  start = time.time()
  slots = execution.core_slots(jobs)
  free = list(range(len(slots)))
  running: List[_Job] = []
  logging.info("job slots on CPU cores %s (%d cores available); %d cell(s) to run", slots,
               execution.available_cores(), len(todo))
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
          todo = []
          break
      cell = todo.pop(0)
      slot = free.pop(0)
      running.append(_Job(cell, slot, slots[slot]))
    time.sleep(0.2)
    for job in list(running):
      if not job.poll():
        continue
      running.remove(job)
      free.append(job.slot)
      took = time.time() - job.t0
      ok = job.returncode == 0
      if ok:
        times.append((job.cell.kind, took))
        logging.info("%s done in %.0f s (total %.0f s)", job.cell.name, took,
                     time.time() - start)
        if on_finished is not None:
          try:
            on_finished(job.cell, took)
          except Exception as e:  # noqa: BLE001  (reported as this cell's failure)
            logging.error("%s: finished, but %s: %s", job.cell.name, type(e).__name__, e)
            ok = False
      if ok:
        out.finished[job.cell.name] = took
      else:
        out.failed.append(os.path.join(job.cell.workdir, "log.txt"))
        if job.returncode:
          logging.info("%s FAILED (exit %d) in %.0f s", job.cell.name, job.returncode, took)
  return out
