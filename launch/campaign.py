r"""Runs an ordered plan of cells within a time budget, and packs each finished cell's results.

    python launch/campaign.py --plan=launch/plans/fmnist_table1.txt --budget_s=780 --out=DIR \
        [--jobs=1] [--config.x=v ...]

Made for machines lent in slots (a GPU for ~15 minutes, start-up included): run it again in
the next slot with the same --out (or a fresh one holding the packed results) and it goes on
where the last one stopped.

The plan: one cell per line, `CONFIG METHOD PARTITION SEED [--config.x=v ...]` (CONFIG as
--config takes it, e.g. configs/fmnist.py; PARTITION shardN, dirALPHA or iid; `#` starts a
comment), run in the file's order. A cell may appear once (a second line of the same config,
method, partition and seed is refused naming both lines); a line that is not a cell (an unclosed
quote, a field the config lacks, a config file that does not load, bytes that are not UTF-8) is
refused naming PLAN:LINE, before anything runs. The --config.x=v given here apply to every cell (e.g.
--config.data.dir=...); a line's own overrides come after them.

Each cell runs in DIR/runs/<config>/<partition>/<method>/seed<k> (checkpoints and all, as
`python -m gas_jax.main`; an interrupted cell resumes there) and, once finished, is packed into
ONE small file RESULTS/<config>/<partition>/<method>/seed<k>.json (RESULTS: --results,
default DIR/results; its config.json,
summary.json and metrics.jsonl rows, and the cell's wall time: `gas_jax.cell_results.pack_run`), the
files to copy back from the machine and commit. A cell whose packed result (or run folder)
records it finished with this very config is skipped; one that holds another config is refused
and reported, never mixed in or packed over (`gas_jax.cell_results`: an unreadable packed file
of a planned cell stops the call naming the file; one of no planned cell is skipped with a
warning). Ctrl-C or SIGTERM stops the running cell and ends with one line; the next call resumes
it, and its packed `cell_wall_s` counts every attempt (cell_wall.json in its run folder). <config> is the config file's name with its argument, e.g.
`fmnist:shard2` -> `fmnist_shard2`.

The budget: no cell starts unless the longest measured wall time of its kind (its <config> and
method; else of any cell measured: those packed before and this call's) says it ends within
--budget_s of this start; with no measurement yet, the first cell runs alone. The cells of one call share DIR/xla_cache (XLA's
persistent compilation cache). Exits non-zero if a cell failed; cells the budget left are listed.

The table and plots of the packed results:
`python launch/compare.py --config=CONFIG --methods=... --partitions=... --seeds=...
--workdir=DIR/results/<config> --report_only` with the campaign's --config.x=v overrides
(e.g. the same --config.data.dir: it is part of a run's identity).
"""
import json
import math
import os
import shlex
import sys
from typing import List, Tuple

from absl import app, flags, logging

from gas_jax import cell_results, cell_processes, cells, metrics, report
from gas_jax import config as config_lib
from gas_jax.errors import ConfigError, RunError

_PLAN = flags.DEFINE_string("plan", None, "The plan file (see the module docstring).")
_BUDGET = flags.DEFINE_float("budget_s", None, "Seconds this call may run cells for "
                             "(default: no limit).")
_OUT = flags.DEFINE_string("out", None, "The campaign's folder (runs/, results/, xla_cache/).")
_JOBS = flags.DEFINE_integer("jobs", 1, "Cells at once; the CPU cores are split among them.")
_RESULTS = flags.DEFINE_string("results", None, "Where the packed cells go (default DIR/results).")
flags.mark_flags_as_required(["plan", "out"])

_OWN = ("--config.algorithm", "--config.seed", "--config.data.partition", "--config.data.shards",
        "--config.data.alpha")


def config_label(config_arg: str) -> str:
  """configs/fmnist.py:shard2 -> fmnist_shard2 (a folder name)."""
  path, _, arg = config_arg.partition(":")
  stem = os.path.splitext(os.path.basename(path))[0]
  return stem + (("_" + arg.replace(":", "_")) if arg else "")


def parse_plan(path: str) -> List[dict]:
  """The plan's cells, in order: dict(config, method, partition, seed, overrides, line).
  ConfigError (one line, naming PATH:LINE) for a line that is not a cell."""
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise ConfigError(f"--plan={path}: {e.strerror}") from None
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    n = raw[:e.start].count(b"\n") + 1
    raise ConfigError(f"{path}:{n}: not UTF-8 text (byte {raw[e.start]:#04x})") from None
  out = []
  for n, line in enumerate(text.splitlines(), 1):
    try:
      words = shlex.split(line, comments=True)
    except ValueError as e:
      raise ConfigError(f"{path}:{n}: {line.strip()!r}: {e} (an unclosed quote?)") from None
    if not words:
      continue
    if len(words) < 4 or not all(w.startswith("--config.") and "=" in w for w in words[4:]):
      raise ConfigError(f"{path}:{n}: {line.strip()!r} is not 'CONFIG METHOD PARTITION SEED "
                        "[--config.x=v ...]'")
    try:
      seed = int(words[3])
    except ValueError:
      raise ConfigError(f"{path}:{n}: seed {words[3]!r} must be an integer") from None
    own = [w for w in words[4:] if w.split("=", 1)[0] in _OWN]
    if own:
      raise ConfigError(f"{path}:{n}: {own[0]} is set by the line's METHOD/PARTITION/SEED")
    out.append(dict(config=words[0], method=words[1], partition=words[2], seed=seed,
                    overrides=words[4:], line=n))
  return out


def load_config(config_arg: str, overrides: List[str]):
  """The config of `--config=config_arg` with the --config.x=v overrides, as main would;
  ConfigError (one line) for a config file that does not load or a field it lacks."""
  from ml_collections import config_flags  # noqa: PLC0415
  argv = ["campaign", f"--config={config_arg}", *overrides]
  fv = flags.FlagValues()
  # ml_collections reads the --config.x=v overrides from `sys_argv` (default: sys.argv).
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  try:
    fv(argv)
    config = fv.config
    config.to_dict()    # (a config file that failed to load raises here)
  except (AttributeError, KeyError) as e:
    while e.args and isinstance(e.args[0], BaseException):   # (AttributeError(KeyError(...)))
      e = e.args[0]
    lines = str(e.args[0] if e.args else e).splitlines() or ["?"]
    key = lines[0].strip("'\"")
    hint = next((f"; {ln.strip()}" for ln in lines[1:] if ln.lower().startswith("did you")), "")
    given = [a.split("=")[0] for a in overrides if a.split("=")[0].split(".")[-1] == key]
    raise ConfigError(f"{given[-1] if given else key}: the config has no field {key!r}"
                      f"{hint}") from None
  except (OSError, flags.Error) as e:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    why = next((ln for ln in reversed(lines) if "Errno" in ln or "Error" in ln), lines[-1])
    raise ConfigError(f"--config={config_arg} could not be loaded ({why})") from None
  return config


def make_cell(out: str, entry: dict, overrides: List[str]) -> cells.Cell:
  """The plan entry's cell: runs in DIR/runs/<config>/..., packed to DIR/results/<config>/...
  (the partition in its canonical label, so that dir0.10 and dir0.1 are one cell)."""
  label = config_label(entry["config"])
  cell_overrides = overrides + entry["overrides"]
  base = load_config(entry["config"], cell_overrides)
  m, s = entry["method"], entry["seed"]
  config = cells.grid_config(base, entry["partition"], m, s)
  p = report.partition_label(config)
  return cells.Cell(
      name=f"{label}/{p}/{m}/seed{s}", kind=f"{label}/{m}",
      workdir=report.cell_dir(os.path.join(out, "runs", label), p, m, s),
      config=config,
      argv=[f"--config={entry['config']}", *cell_overrides, f"--config.algorithm={m}",
            f"--config.seed={s}", *cells.partition_flags(base, p)])


def make_grid(out: str, plan: List[dict], overrides: List[str]) -> List[cells.Cell]:
  """The plan's cells, each checked (ConfigError naming PLAN:LINE); a cell planned twice is
  refused, naming both lines (its folder holds one run: it would count twice)."""
  grid, first = [], {}
  for e in plan:
    where = f"{_PLAN.value}:{e['line']}"
    try:
      cell = make_cell(out, e, overrides)
      config_lib.validate(cell.config)
    except (ConfigError, RunError, ValueError) as err:
      raise ConfigError(f"{where}: {' '.join(str(err).split())}") from None
    if cell.name in first:
      raise ConfigError(f"{where} plans the cell {cell.name} again (first at "
                        f"{_PLAN.value}:{first[cell.name]}): each cell may appear once")
    first[cell.name] = e["line"]
    grid.append(cell)
  return grid


def results_root(out: str) -> str:
  """Where the packed cells go: --results, default DIR/results."""
  return _RESULTS.value or os.path.join(out, "results")


def result_dir(out: str, cell: cells.Cell) -> str:
  """RESULTS/<config>/<partition>/<method>/seed<k> (its packed file: that + .json)."""
  return os.path.join(results_root(out),
                      os.path.relpath(cell.workdir, os.path.join(out, "runs")))


def pack(out: str, cell: cells.Cell, wall_s) -> str:
  """Writes the finished cell's packed result (atomically); returns its path. `wall_s`: the
  cell's wall time (None: the attempts recorded in its folder, `cells.recorded_attempts`)."""
  path = report.packed_path(result_dir(out, cell))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if wall_s is None:
    attempts = cell_processes.recorded_attempts(cell.workdir)
    wall_s = None if attempts is None else float(sum(attempts))
  packed = cell_results.pack_run(cell.workdir, cell=cell.name, cell_wall_s=wall_s)
  metrics.atomic_write(path, json.dumps(packed, sort_keys=True) + "\n")
  logging.info("packed %s", path)
  return path


def measured_times(out: str, labels) -> List[Tuple[str, float]]:
  """(kind "<config>/<method>", wall seconds) of the cells packed in RESULTS/<config> before
  this call, for the <config> labels given; an unreadable file is skipped with a warning
  naming it (the cells of the plan were read strictly before)."""
  times = []
  for label in sorted(set(labels)):
    folder = os.path.join(results_root(out), label)
    for root, _, files in os.walk(folder):
      for f in sorted(files):
        if not f.endswith(".json") or f.startswith("."):   # not atomic_write's temporaries
          continue
        path = os.path.join(root, f)
        try:
          t = cell_results.read_packed_file(path).get("cell_wall_s")
        except cell_results.ResultsFileError as e:
          logging.warning("skipped for the time budget: %s", " ".join(str(e).split()))
          continue
        if isinstance(t, (int, float)) and math.isfinite(t):
          times.append((f"{label}/{os.path.basename(root)}", float(t)))
  return times


def check_flags() -> None:
  """--budget_s and --jobs, one line naming the flag."""
  b = _BUDGET.value
  if b is not None and not (math.isfinite(b) and b > 0):
    raise ConfigError(f"--budget_s={b} is invalid: a finite number of seconds > 0 (or leave it "
                      "out: no limit)")
  if _JOBS.value < 1:
    raise ConfigError(f"--jobs={_JOBS.value} is invalid: at least 1")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  out = _OUT.value
  _, overrides = cells.user_args(sys.argv[1:], _OWN, "campaign.py")
  overrides = overrides + cells.cache_args(out, overrides)
  try:
    check_flags()
    grid = make_grid(out, parse_plan(_PLAN.value), overrides)
    resolved = cells.resolve_grid(
        {c.name: c for c in grid}, lambda c: report.packed_path(result_dir(out, c)))
  except (ConfigError, RunError) as e:
    sys.exit(f"error: {e}")
  todo, failed, done = [], [], 0
  for c in grid:
    r = resolved[c.name]
    packed = report.packed_path(result_dir(out, c))
    if r.state == "done" and r.source != packed and os.path.exists(packed):
      logging.error("%s: finished in %s, but %s holds another run: not packed over it",
                    c.name, c.workdir, packed)
      failed.append(c.name)
    elif r.state == "done":
      if r.source != packed:
        pack(out, c, None)   # finished but not packed (e.g. stopped in between): pack it
      done += 1
    elif r.state == "todo":
      todo.append(c)
    else:
      logging.error("%s: %s; not run", c.name, r.why)
      failed.append(c.name)
  logging.info("plan %s: %d cells, %d done, %d to run", _PLAN.value, len(grid), done, len(todo))
  prior = measured_times(out, [c.name.split("/")[0] for c in todo])
  outcome = cell_processes.run_cells(todo, _JOBS.value, budget_s=_BUDGET.value, prior_times=prior,
                            on_finished=lambda cell, took: pack(out, cell, took))
  failed += outcome.failed
  if outcome.deferred:
    logging.info("left for the next call (budget): %s", ", ".join(outcome.deferred))
  print(json.dumps(dict(finished=sorted(outcome.finished), deferred=outcome.deferred,
                        failed=failed, already_done=done)))
  if failed:
    sys.exit("error: failed cells (see their logs or the lines above): " + ", ".join(failed))


def _parse_flags(argv):
  """absl's parser for this script's own flags; the --config.x=v overrides are read from
  sys.argv by `cells.user_args` (absl knows no `config` flag here)."""
  return flags.FLAGS([a for a in argv if not a.startswith("--config.")])


if __name__ == "__main__":
  app.run(cell_processes.exit_on_signals(main), flags_parser=_parse_flags)
