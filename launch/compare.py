r"""Runs a method x seed x partition comparison and writes a paper-style table and plots.

    python launch/compare.py --config=configs/digits.py \
        --methods=gas,gas_nogen,fedavg,fedbuff,ca2fl,minibatch_sfl,s2fl --seeds=0,1,2 \
        --partitions=shard2,dir0.1 --workdir=runs/compare --jobs=2 [--config.x=v ...]

Every cell runs as its own process,
`python -m gas_jax.main --config=CONFIG --workdir=DIR/<partition>/<method>/seed<k>
 [--config.x=v ...] --config.algorithm=<method> --config.seed=<k> <partition overrides>`,
with its output in that directory's log.txt; `--jobs` runs several at once. Cells whose
summary.json records this very cell finished are skipped: a cell is keyed by its whole config
(config.json, `gas_jax.workdir`), so a cell that holds a run with other overrides is reported
as failed, never reused (an interrupted cell resumes from its checkpoint). Then
DIR/results.md, DIR/accuracy_vs_time.png and DIR/accuracy_vs_iteration.png are written from all
finished cells (`gas_jax.report`). Without --partitions the config's own partition is the only
column. Exits non-zero if any cell failed. Unless the overrides set it, the cells share XLA's
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
from gas_jax import cells, registry, report

_CONFIG = config_flags.DEFINE_config_file("config", None, "Base experiment config file.",
                                          lock_config=True)
_METHODS = flags.DEFINE_list("methods", None, "Algorithms (config.algorithm values).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (config.seed values).")
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  config, root = _CONFIG.value, _WORKDIR.value
  methods = _METHODS.value
  unknown = [m for m in methods if m not in registry.ALGORITHMS]
  if unknown:
    sys.exit(f"error: --methods: unknown {unknown}; allowed: "
             f"{', '.join(registry.ALGORITHMS.names())}")
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    sys.exit(f"error: --seeds={','.join(_SEEDS.value)} must be integers")
  partitions = _PARTITIONS.value or [report.partition_label(config)]
  try:
    part_flags = {p: cells.partition_flags(config, p) for p in partitions}
  except config_lib.ConfigError as e:
    sys.exit(f"error: --partitions: {e}")
  config_arg, overrides = cells.user_args(sys.argv[1:], _OWN, "compare.py")
  overrides = overrides + cells.cache_args(root, overrides)
  keys = [(p, m, s) for p in partitions for m in methods for s in seeds]
  grid = {k: make_cell(root, config, config_arg, overrides, part_flags, k) for k in keys}
  try:
    states = {k: cells.state(c) for k, c in grid.items()}
    packed = {k: cells.packed_state(c) for k, c in grid.items() if states[k] == "todo"}
  except (config_lib.RunError, ValueError) as e:
    sys.exit(f"error: {e}")
  failed = cells.refused(states, grid) + cells.refused(packed, grid)
  finished = {k for k in keys if states[k] == "done" or packed.get(k) == "done"}
  todo = [grid[k] for k in keys if states[k] == "todo" and packed.get(k) == "missing"]
  if _REPORT_ONLY.value:
    todo = []
  logging.info("%d cells, %d already done, %d to run with %d job(s)", len(keys), len(finished),
               len(todo), _JOBS.value)
  failed += cells.run_cells(todo, _JOBS.value).failed
  # Only cells finished with this comparison's config enter the table and plots (a refused
  # cell of other overrides, or a stale summary of a smaller T, is left out).
  done = {k for k in keys if cells.state(grid[k]) == "done" or packed.get(k) == "done"}
  paths = report.write_report(root, methods, partitions, seeds, cells=done,
                              targets=tuple(config.report.targets))
  cells.finish(paths, failed)


if __name__ == "__main__":
  app.run(main)
