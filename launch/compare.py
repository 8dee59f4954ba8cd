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
import os
import subprocess
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from gas_jax import config as config_lib
from gas_jax import execution, registry, report
from gas_jax import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Base experiment config file.",
                                          lock_config=True)
_METHODS = flags.DEFINE_list("methods", None, "Algorithms (config.algorithm values).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (config.seed values).")
_PARTITIONS = flags.DEFINE_list("partitions", [], "Partitions: shardN, dirALPHA, iid.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Root directory of the comparison.")
_JOBS = flags.DEFINE_integer("jobs", 1, "Runs at once; the CPU cores are split among them.")
flags.mark_flags_as_required(["config", "methods", "workdir"])

_OWN = ("--config.algorithm", "--config.seed", "--config.data.partition", "--config.data.shards",
        "--config.data.alpha")


def partition_overrides(config, label: str):
  """shard2 -> data.partition/shards flags etc. (checked by config.apply_partition_arg)."""
  cfg = config.copy_and_resolve_references()
  config_lib.apply_partition_arg(cfg, label)
  d = cfg.data
  return [f"--config.data.partition={d.partition}", f"--config.data.shards={d.shards}",
          f"--config.data.alpha={d.alpha}"]


def cell_config(config, partition: str, method: str, seed: int):
  """The config a cell runs with (what its config.json must hold)."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.algorithm, c.seed = method, seed
  config_lib.apply_partition_arg(c, partition)
  return c


def cell_state(root: str, config, cell) -> str:
  """'done' (finished with this config), 'todo', or why the cell's workdir cannot be used."""
  wd = report.cell_dir(root, *cell)
  c = cell_config(config, *cell)
  stored = workdir_lib.read_stored_config(wd) if os.path.isdir(wd) else None
  if stored is not None:
    diff = workdir_lib.differences(stored, c.to_dict(), workdir_lib.done_iterations(wd))
    if diff:
      return f"holds a run with another config ({'; '.join(diff[:4])})"
  if workdir_lib.finished_summary(wd, c.num_global_iters) is not None:
    return "done"
  return "todo"


def user_args(argv):
  """The --config=... argument and the --config.x=v overrides, as given (ours removed)."""
  config_arg, overrides, it = None, [], iter(argv)
  for a in it:
    if a == "--config":
      config_arg = "--config=" + next(it)
    elif a.startswith("--config="):
      config_arg = a
    elif a.startswith("--config."):
      if "=" not in a:
        a = a + "=" + next(it)
      if a.split("=", 1)[0] in _OWN:
        logging.warning("ignoring %s: compare.py sets it per cell", a)
      else:
        overrides.append(a)
  return config_arg, overrides


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
    part_flags = {p: partition_overrides(config, p) for p in partitions}
  except config_lib.ConfigError as e:
    sys.exit(f"error: --partitions: {e}")
  config_arg, overrides = user_args(sys.argv[1:])

  cells = [(p, m, s) for p in partitions for m in methods for s in seeds]
  try:
    states = {c: cell_state(root, config, c) for c in cells}
  except config_lib.RunError as e:
    sys.exit(f"error: {e}")
  todo = [c for c in cells if states[c] == "todo"]
  failed = []
  for c, st in states.items():
    if st not in ("todo", "done"):
      wd = report.cell_dir(root, *c)
      logging.error("%s %s: not run; use another --workdir", wd, st)
      failed.append(wd)
  logging.info("%d cells, %d already done, %d to run with %d job(s)", len(cells),
               sum(st == "done" for st in states.values()), len(todo), _JOBS.value)
  running, start = {}, time.time()
  slots = execution.core_slots(_JOBS.value)
  free = list(range(len(slots)))
  logging.info("job slots on CPU cores %s (%d cores available)", slots,
               execution.available_cores())
  key = "--config.execution.compilation_cache_dir"
  cache = ([] if any(a.startswith(key) for a in overrides)
           else [f"{key}={os.path.abspath(os.path.join(root, 'xla_cache'))}"])
  while todo or running:
    while todo and len(running) < max(1, _JOBS.value):
      p, m, s = cell = todo.pop(0)
      wd = report.cell_dir(root, p, m, s)
      os.makedirs(wd, exist_ok=True)
      cmd = [sys.executable, "-m", "gas_jax.main", config_arg, f"--workdir={wd}", *overrides,
             f"--config.algorithm={m}", f"--config.seed={s}", *part_flags[p], *cache]
      log = open(os.path.join(wd, "log.txt"), "a")
      slot = free.pop(0)
      pin = ((lambda cores=slots[slot]: os.sched_setaffinity(0, cores))
             if hasattr(os, "sched_setaffinity") else None)     # (not on macOS: no pinning)
      running[cell] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                        preexec_fn=pin), log, time.time(), slot)
    time.sleep(0.2)
    for cell, (proc, log, t0, slot) in list(running.items()):
      if proc.poll() is None:
        continue
      log.close()
      del running[cell]
      free.append(slot)
      status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
      logging.info("%s/%s/seed%d %s in %.0f s (total %.0f s)", *cell, status, time.time() - t0,
                   time.time() - start)
      if proc.returncode:
        failed.append(os.path.join(report.cell_dir(root, *cell), "log.txt"))
  # Only cells finished with this comparison's config enter the table and plots (a refused
  # cell of other overrides, or a stale summary of a smaller T, is left out).
  done = {c for c in cells if cell_state(root, config, c) == "done"}
  paths = report.write_report(root, methods, partitions, seeds, cells=done)
  with open(paths["table"]) as f:
    print(f.read())
  logging.info("wrote %s", ", ".join(paths.values()))
  if failed:
    sys.exit("error: failed cells (see their logs or the lines above): " + ", ".join(failed))


if __name__ == "__main__":
  app.run(main)
