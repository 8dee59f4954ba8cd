"""The experiment driver: `train_and_evaluate(config, workdir)`.

config -> execution plan (`execution`) -> context (`context`: data, partition, clients, model,
clock) -> runner (`runners`) -> the run loop (`loop`) with its callbacks (`callbacks`:
checkpoints, evaluation, metrics files, progress). One seed, or the runs axis
(`config.seeds`, `runners.seeds_runner`: several seeds in one program, each writing
WORKDIR/seed<s>/ as its own run would), go through the same loop.
"""
import os
from typing import Dict

import jax
import ml_collections

from gas_jax import callbacks as callbacks_lib
from gas_jax import config as config_lib
from gas_jax import context as context_lib
from gas_jax import evaluation
from gas_jax import execution
from gas_jax import metrics as metrics_lib
from gas_jax import runners
from gas_jax import variants
from gas_jax import workdir as workdir_lib
from gas_jax.loop import Lane, run_loop


def use_compilation_cache(config: ml_collections.ConfigDict) -> None:
  """execution.compilation_cache_dir: XLA's persistent compilation cache
  (`jax_compilation_cache_dir`), so that runs of the same shapes (seeds, methods, partitions of
  a table) reuse the compiled steps instead of compiling them again at start-up."""
  path = config.execution.get("compilation_cache_dir", "")
  if path:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
    # Every program, not only those compiling for more than a second (JAX's default): a run
    # compiles dozens of small ones (evaluation, metrics, state set-up) besides its steps.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _lanes(config, workdir: str):
  """(seed configs, lanes): one lane, or one per seed of `config.seeds` in WORKDIR/seed<s>."""
  if not config.seeds:
    return [config], [Lane(0, config.seed, config, workdir)]
  configs = [workdir_lib.seed_config(config, s) for s in config.seeds]
  return configs, [Lane(i, int(s), c, os.path.join(workdir, f"seed{s}"))
                   for i, (s, c) in enumerate(zip(config.seeds, configs))]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       overwrite: bool = False) -> Dict:
  """Runs one experiment and writes its outputs to `workdir`; returns the summary.

  A workdir that holds a checkpoint of the same run is resumed from it, with the same result as
  an uninterrupted run; a finished run is left as it is. A workdir holding another run is
  refused (`gas_jax.workdir`), unless `overwrite`, which moves the old run aside first. The
  workdir is locked while the run lives. `config.variant` is resolved first (`variants`: the
  concrete fields of the paper-as-written switch), so everything below, config.json and the
  run's identity included, sees the resolved config.
  """
  config = variants.resolve(config)
  config_lib.validate(config, workdir)
  execution.limit_cpu_threads(config.execution.get("cpu_threads", 0))
  use_compilation_cache(config)
  if not overwrite and jax.process_count() == 1:   # fail fast, before the data is loaded
    summary = workdir_lib.finished_or_check(config, workdir)
    if summary is not None:
      return summary
  configs, lanes = _lanes(config, workdir)
  contexts = []
  for c in configs:
    contexts.append(context_lib.build_context(c, like=contexts[0] if contexts else None))
  plan = execution.ExecutionPlan.resolve(config, model=contexts[0].model)
  for ctx in contexts:
    ctx.plan = plan
  plan.log()
  with plan.active():
    lock = workdir_lib.WorkdirLock(workdir, metrics_lib.is_primary())
    try:
      summary = workdir_lib.claim(config, workdir, overwrite, lock)
      if summary is not None:
        return summary
      runner = runners.make_runner(contexts, bool(config.seeds))
      ds, m = contexts[0].dataset, contexts[0].model
      metrics_lib.log_run(config, m)
      evaluator = evaluation.Evaluator(m, *evaluation.test_images(ds, config.get("eval_examples", 0)),
                                       config.eval_batch_size)
      callbacks = callbacks_lib.standard(config, workdir, evaluator, plan.to_dict())
      return run_loop(runner, lanes, callbacks, config.num_global_iters, bool(config.seeds))
    finally:
      lock.release()
