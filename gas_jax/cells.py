"""Cells of an experiment grid, each run as its own `python -m gas_jax.main` process.

The launchers (`launch/compare.py`, `launch/privacy.py`, `launch/campaign.py`) share this: a
cell is a workdir with the config its run must hold. `resolve` / `resolve_grid` say which of its
files counts (`gas_jax.cell_results`: its run folder or its packed file, one source of truth,
unreadable files named): "done" when it holds this very config finished, "todo" when it is empty
or holds an unfinished run of this config (which then resumes from its checkpoint), and refused
otherwise (a run of other overrides is never reused or overwritten). Running them:
`gas_jax.cell_processes`.
"""
import dataclasses
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence

from absl import logging

from gas_jax import cell_results
from gas_jax import config as config_lib
from gas_jax.errors import RunError


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


def resolve(cell: Cell, packed_file: Optional[str] = None) -> cell_results.Resolved:
  """The cell's one source of truth (`cell_results.resolve`): its run folder, or its packed
  file `packed_file` (`report.packed_path`), if it has one."""
  return cell_results.resolve(cell.workdir, cell.config, packed_file)


def run_state(cell: Cell) -> str:
  """'done' (its run folder holds it finished with this config), 'todo', or why the cell's
  workdir cannot be used (its packed file is not looked at)."""
  r = resolve(cell)
  return r.why if r.state == "refused" else r.state


def state(cell: Cell) -> str:
  """run_state, with a finished run whose `after` commands are still needed counted 'todo'."""
  s = run_state(cell)
  return "todo" if s == "done" and not cell.after_done() else s


def resolve_grid(grid: Dict, packed_file: Callable[[Cell], Optional[str]] = lambda c: None):
  """key -> Resolved for every cell of `grid` (key -> Cell), each warning logged. Every
  unreadable results file of the grid's cells (and every cell whose run folder and packed file
  disagree) is logged, one line each naming the file, then RunError: a cell that is needed is
  never guessed."""
  out, errors = {}, []
  for k, c in grid.items():
    try:
      out[k] = resolve(c, packed_file(c))
    except RunError as e:
      errors.append(f"{c.name}: {' '.join(str(e).split())}")
      logging.error("%s", errors[-1])
      continue
    for note in out[k].notes:
      logging.warning("%s: %s", c.name, note)
  if errors:
    raise RunError(f"{len(errors)} cell(s) above have unreadable or "
                   "conflicting results files: repair or move them away; nothing was run or "
                   "written")
  return out


def refused(resolved: Dict, grid: Dict) -> List[str]:
  """Logs every refused cell (its files hold another run, or disagree) and returns their
  names: the launchers report them as failed and never run them."""
  out = []
  for k, r in resolved.items():
    if r.state == "refused":
      logging.error("%s: %s; not run", grid[k].name, r.why)
      out.append(grid[k].name)
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

