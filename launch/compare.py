r"""Runs a method x seed x partition comparison and writes a paper-style table and plots.

    python launch/compare.py --config=configs/digits.py \
        --methods=gas,gas_nogen,fedavg,fedbuff,ca2fl,minibatch_sfl,s2fl --seeds=2023,1998,1125 \
        --partitions=shard2,dir0.1 --workdir=runs/compare --jobs=2 [--config.x=v ...]

Every cell runs as its own process,
`python -m gas_jax.main --config=CONFIG --workdir=DIR/<partition>/<method>/seed<k>
 [--config.x=v ...] --config.algorithm=<method> --config.seed=<k> <partition overrides>`,
with its output in that directory's log.txt; `--jobs` runs several at once. Methods, seeds and
partitions are sets: one named twice (or two labels of one partition, dir0.1 and dir0.10) is
refused before anything runs. Each cell has one source of truth (`gas_jax.cell_results`): its
run folder or its packed file (DIR/<partition>/<method>/seed<k>.json, from launch/campaign.py),
whichever holds this very config finished at this T; if both do and disagree, the cell is
refused naming both files; a run of other overrides is reported as failed, never reused or
overwritten (an interrupted cell of this config resumes from its checkpoint). An unreadable
results file of a cell of the grid stops the command before anything runs, naming the file.
Then DIR/results.md, DIR/accuracy_vs_time.png, DIR/accuracy_vs_iteration.png, DIR/staleness.png
(a staleness histogram per method) and DIR/cells.json (the cells that counted, each with the
file it was read from; the paper's figures, launch/figures.py, read only those) are written
(each whole or not at all) from the cells that count (`gas_jax.report`); if none does, nothing
is written and the command fails: an empty table never replaces a good one. Without
--partitions the config's own partition is the only column. Exits non-zero if any cell failed.
Ctrl-C or SIGTERM stops the running cells (each resumes when the command is run again) and ends
with one line. Unless the overrides set it, the cells share XLA's
persistent compilation cache in DIR/xla_cache (`execution.compilation_cache_dir`): cells of the
same method and shapes reuse each other's compiled steps instead of compiling them at start-up.

With --jobs=N the CPU cores this process may use are split among the N job slots (each cell's
process is pinned to its slot's cores, `execution.core_slots`; its execution plan records the count):
XLA's CPU runtime slows down far more than the share of cores when processes share them.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from gas_jax import config as config_lib
from gas_jax import cell_results, cell_processes, cells, registry, report

_CONFIG = config_flags.DEFINE_config_file("config", None, "Base experiment config file.",
                                          lock_config=True)
_METHODS = flags.DEFINE_list("methods", None, "Algorithms (config.algorithm values).")
_SEEDS = flags.DEFINE_list("seeds", ["2023", "1998", "1125"],
                           "Seeds (config.seed values; default: the paper's).")
_PARTITIONS = flags.DEFINE_list("partitions", [], "Partitions: shardN, dirALPHA, iid.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Root directory of the comparison.")
_JOBS = flags.DEFINE_integer("jobs", 1, "Runs at once; the CPU cores are split among them.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Run nothing: write the table and plots "
                                 "from the finished cells in --workdir (run folders or packed "
                                 "results of launch/campaign.py).")
flags.mark_flags_as_required(["config", "methods", "workdir"])

_OWN = ("--config.algorithm", "--config.seed", "--config.data.partition", "--config.data.shards",
        "--config.data.alpha")


def make_cell(root: str, config, config_arg: str, overrides, part_flags, cell) -> cells.Cell:
  """The grid cell (partition, method, seed): its workdir, config and command line."""
  p, m, s = cell
  return cells.Cell(name=f"{p}/{m}/seed{s}", workdir=report.cell_dir(root, p, m, s),
                    config=cells.grid_config(config, p, m, s),
                    argv=[config_arg, *overrides, f"--config.algorithm={m}", f"--config.seed={s}",
                          *part_flags[p]])


def grid_axes(config):
  """(methods, seeds, partitions) of the command line, each a set given in order; ConfigError
  (one line) for an unknown method, a seed that is no integer, a bad or repeated partition."""
  methods = cell_results.unique(_METHODS.value, "--methods")
  unknown = [m for m in methods if m not in registry.ALGORITHMS]
  if unknown:
    raise config_lib.ConfigError(f"--methods: unknown {unknown}; allowed: "
                                 f"{', '.join(registry.ALGORITHMS.names())}")
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    raise config_lib.ConfigError(f"--seeds={','.join(_SEEDS.value)} must be integers") from None
  seeds = cell_results.unique(seeds, "--seeds")
  partitions = _PARTITIONS.value or [report.partition_label(config)]
  # Two labels of one partition (dir0.1, dir0.10) would run and count it twice.
  canonical = [report.partition_label(cells.grid_config(config, p, methods[0], seeds[0]))
               for p in partitions]
  cell_results.unique(canonical, "--partitions (as partitions)")
  return methods, seeds, partitions


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  config, root = _CONFIG.value, _WORKDIR.value
  if _JOBS.value < 1:
    sys.exit(f"error: --jobs={_JOBS.value} must be at least 1")
  try:
    methods, seeds, partitions = grid_axes(config)
    part_flags = {p: cells.partition_flags(config, p) for p in partitions}
    config_arg, overrides = cells.user_args(sys.argv[1:], _OWN, "compare.py")
    overrides = overrides + cells.cache_args(root, overrides)
    keys = [(p, m, s) for p in partitions for m in methods for s in seeds]
    grid = {k: make_cell(root, config, config_arg, overrides, part_flags, k) for k in keys}
    for c in grid.values():
      config_lib.validate(c.config)
    packed_file = lambda c: report.packed_path(c.workdir)   # noqa: E731
    resolved = cells.resolve_grid(grid, packed_file)
  except (config_lib.ConfigError, config_lib.RunError) as e:
    sys.exit(f"error: {e}")
  failed = cells.refused(resolved, grid)
  todo = [grid[k] for k in keys if resolved[k].state == "todo"]
  logging.info("%d cells, %d already done, %d to run with %d job(s)", len(keys),
               sum(r.state == "done" for r in resolved.values()),
               0 if _REPORT_ONLY.value else len(todo), _JOBS.value)
  if not _REPORT_ONLY.value:
    failed += cell_processes.run_cells(todo, _JOBS.value).failed
    try:
      resolved = cells.resolve_grid(grid, packed_file)
    except config_lib.RunError as e:
      sys.exit(f"error: {e}")
  # Only each cell's one source of truth, finished with this comparison's config, counts.
  results = {k: r.result for k, r in resolved.items() if r.state == "done"}
  sources = {k: r.source for k, r in resolved.items() if r.state == "done"}
  try:
    paths = report.write_report(root, methods, partitions, seeds, results, sources,
                                targets=tuple(config.report.targets))
  except config_lib.RunError as e:
    sys.exit(f"error: {e}" + (f"; failed cells: {', '.join(failed)}" if failed else ""))
  cells.finish(paths, failed)


if __name__ == "__main__":
  app.run(cell_processes.exit_on_signals(main))
