"""The experiment driver: config -> data -> partition -> clients -> runner -> metrics.

`train_and_evaluate(config, workdir)` validates the config, builds everything from it, lets the
algorithm's runner (`gas_jax.runners`) advance one global iteration at a time, evaluates after
every global iteration and writes config.json / metrics.jsonl / summary.json (`metrics`).

Randomness: every stream derives from `config.seed` alone - the partition, client capabilities,
scheduler draws and minibatch orders through numpy SeedSequences with distinct stream ids, the
model init and the device steps through `jax.random.fold_in` - so every algorithm sees the same
partition and client capabilities for a seed (spec §6.13), whatever order things are built in.
"""
import os
import signal
import time
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from gas_jax import checkpoint
from gas_jax import config as config_lib
from gas_jax import metrics as metrics_lib
from gas_jax import runners
from gas_jax import workdir as workdir_lib
from gas_jax.data import clients as clients_lib
from gas_jax.data import partition as partition_lib
from gas_jax.data import sources
from gas_jax.models.registry import get_model
from gas_jax.registry import ALGORITHMS
from gas_jax.system import timing


def time_model(config, model, profiles) -> timing.TimeModel:
  """Time constants from the model itself, or REF's hard-coded AlexNet-L2 ones (spec §1.9)."""
  if config.time.ref_constants:
    const = dict(timing.REF_ALEXNET_L2)
  else:
    const = dict(client_flops=model.client_macs, activation_bits=model.activation_bits,
                 client_model_bits=model.client_model_bits,
                 full_flops=model.client_macs + model.server_macs,
                 full_model_bits=model.full_model_bits)
  return timing.TimeModel(profiles=profiles, batch_size=config.clients.batch_size, **const)


class Evaluator:
  """Accuracy and mean CE of (client, server) params over the whole test set, in fixed-size
  padded batches scanned inside one jitted call."""

  def __init__(self, model, x_test, y_test, batch_size: int):
    n = x_test.shape[0]
    bs = min(batch_size, n)
    total = -(-n // bs) * bs
    pad = total - n
    xs = np.concatenate([x_test, np.zeros((pad,) + x_test.shape[1:], x_test.dtype)])
    ys = np.concatenate([y_test, np.zeros((pad,), y_test.dtype)])
    self.n = n
    self.xs = jnp.asarray(xs.reshape((-1, bs) + x_test.shape[1:]))
    self.ys = jnp.asarray(ys.reshape(-1, bs))
    self.ms = jnp.asarray((np.arange(total) < n).reshape(-1, bs))

    def batch(params, x, y, m):
      logits = model.server_apply(params[1], model.client_apply(params[0], x))
      nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)[:, 0]
      return jnp.sum((jnp.argmax(logits, -1) == y) * m), jnp.sum(nll * m)

    @jax.jit
    def run(params, xs, ys, ms):
      return jax.lax.map(lambda b: batch(params, *b), (xs, ys, ms))

    self._run = run

  def __call__(self, params) -> Dict[str, float]:
    correct, nll = jax.device_get(self._run(params, self.xs, self.ys, self.ms))
    return dict(test_accuracy=float(np.sum(correct)) / self.n,
                test_loss=float(np.sum(nll)) / self.n)


def build_context(config: ml_collections.ConfigDict,
                  like: Optional[runners.RunContext] = None) -> runners.RunContext:
  """Everything a run needs, built from the config (no training, nothing written).

  `like`: a context of the same dataset (another seed of the runs axis) whose loaded dataset
  and device-resident train set are shared instead of being loaded and uploaded again."""
  ds = like.dataset if like is not None else sources.load_dataset(config.data.name,
                                                                  config.data.dir or None)
  config_lib.validate_with_data(config, ds.num_classes, len(ds.y_train))
  model = get_model(config.model.name, config.model.split, ds.num_classes, ds.input_shape)
  parts = partition_lib.partition(
      ds.y_train, config.clients.num, config.data.partition, num_classes=ds.num_classes,
      seed=config.seed, shards=config.data.shards, alpha=config.data.alpha,
      min_size=config.data.min_size)
  config_lib.validate_partition(config, [len(p) for p in parts])
  clients = clients_lib.ClientData(parts, ds.y_train, ds.num_classes,
                                   config.clients.batch_size, config.seed)
  profiles = timing.draw_profiles(
      config.clients.num, config.seed,
      compute_range=(config.time.compute_min, config.time.compute_max),
      distance_range=(config.time.distance_min_km, config.time.distance_max_km))
  times = time_model(config, model, profiles)
  config_lib.validate_time_model(config, times)
  if like is not None:
    x, y = like.data["x"], like.data["y"]
  else:
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
  data = dict(x=x, y=y, log_prior=jnp.asarray(clients.logit_adjustment()))
  return runners.RunContext(config=config, dataset=ds, model=model, clients=clients,
                            time_model=times, data=data)


@jax.jit
def _all_finite(tree):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


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


def seed_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  """The single-seed config of one seed of the runs axis (`config.seeds`)."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.seed, c.seeds = int(seed), ()
  return c


def finished_or_check(config: ml_collections.ConfigDict, workdir: str) -> Optional[Dict]:
  """Checks that WORKDIR holds no other run (`gas_jax.workdir`: RunError if it does) and returns
  the stored summary if this run is already finished there."""
  seed_dirs = [(os.path.join(workdir, f"seed{s}"), seed_config(config, s))
               for s in (config.seeds or ())]
  done = max([workdir_lib.done_iterations(workdir)]
             + [workdir_lib.done_iterations(d) for d, _ in seed_dirs])
  workdir_lib.check_same_run(workdir, config.to_dict(), done)
  for d, c in seed_dirs:
    workdir_lib.check_same_run(d, c.to_dict(), done)
  summary = workdir_lib.finished_summary(workdir, config.num_global_iters)
  if summary is not None:
    logging.info("%s holds this run, finished at global iteration %d: nothing to do (summary: "
                 "%s)", workdir, config.num_global_iters, os.path.join(workdir, "summary.json"))
  return summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       overwrite: bool = False) -> Dict:
  """Runs one experiment and writes its outputs to `workdir`; returns the summary.

  A workdir that holds a checkpoint of the same run is resumed from it, with the same result as
  an uninterrupted run; a finished run is left as it is. A workdir holding another run is
  refused (`gas_jax.workdir`), unless `overwrite`, which moves the old run aside first. The
  workdir is locked while the run lives.
  """
  config_lib.validate(config, workdir)
  use_compilation_cache(config)
  if not overwrite and jax.process_count() == 1:   # fail fast, before the data is loaded
    summary = finished_or_check(config, workdir)
    if summary is not None:
      return summary
  if config.seeds:
    from gas_jax import multiseed   # noqa: PLC0415  (the runs axis; imports train's helpers)
    return multiseed.train_seeds(config, workdir, overwrite)
  ctx = build_context(config)
  lock = workdir_lib.WorkdirLock(workdir, metrics_lib.is_primary())
  try:
    summary = claim(config, workdir, overwrite, lock)
    if summary is not None:
      return summary
    return _train(ctx, workdir)
  finally:
    lock.release()


def _share(status: int) -> int:
  """Process 0's decision, for every process of a multi-process run."""
  if jax.process_count() == 1:
    return status
  from jax.experimental import multihost_utils  # noqa: PLC0415
  return int(multihost_utils.broadcast_one_to_all(np.int32(status)))


def claim(config: ml_collections.ConfigDict, workdir: str, overwrite: bool,
          lock: workdir_lib.WorkdirLock) -> Optional[Dict]:
  """Process 0 takes the workdir lock, moves the old run aside with --overwrite, and checks
  the run again (another process may have written in between); every process of a
  multi-process run follows its decision. Returns the summary of a finished run."""
  primary = metrics_lib.is_primary()
  summary, error = None, None
  if primary:
    try:
      lock.acquire()
      if overwrite:
        aside = workdir_lib.move_aside(workdir)
        if aside:
          logging.warning("--overwrite: moved the previous run in %s to %s", workdir, aside)
      summary = finished_or_check(config, workdir)
    except config_lib.RunError as e:
      error = e
  status = _share(2 if error is not None else 1 if summary is not None else 0)
  if status == 2:
    raise error if primary else config_lib.RunError(
        f"process 0 refused the workdir {workdir} (see its error line)")
  if status == 1 and not primary:
    return dict(finished=True)
  return summary


def iteration_walls(rows) -> list:
  """Wall seconds of each global iteration from the rows' cumulative wall_time_s."""
  ends = [float(r["wall_time_s"]) for r in rows]
  return [b - a for a, b in zip([0.0] + ends[:-1], ends)]


def _train(ctx: runners.RunContext, workdir: str) -> Dict:
  config = ctx.config
  runner = ALGORITHMS.get(config.algorithm)(ctx)
  evaluate = Evaluator(ctx.model, ctx.dataset.x_test, ctx.dataset.y_test, config.eval_batch_size)
  ckpt = checkpoint.Checkpointer(workdir, config.checkpoints_to_keep)
  rows, first, wall_offset = [], 1, 0.0
  restored = ckpt.restore_latest(runner.state_dict()["device"])
  if restored is not None:
    step, device, host = restored
    runner.load_state_dict(dict(host["runner"], device=device))
    rows = metrics_lib.read_rows(workdir)[:step]
    if len(rows) != step:
      raise config_lib.RunError(
          f"{workdir}/metrics.jsonl has {len(rows)} rows but the checkpoint is at global "
          f"iteration {step}: the run's files were changed; use a new --workdir, or --overwrite")
    first, wall_offset = step + 1, float(host["wall_time_s"])
    logging.info("resuming from the checkpoint at global iteration %d in %s", step,
                 ckpt.directory)
  writer = metrics_lib.MetricsWriter(workdir, rows)
  writer.write_config(config.to_dict())
  m = ctx.model
  logging.info("%s on %s: model %s/%s, activation %s, client %d params, server %d params",
               config.algorithm, config.data.name, m.name, m.split, m.activation_shape,
               m.client_params, m.server_params)
  progress = metrics_lib.Progress(config.num_global_iters, config.log_every_s, first - 1)
  start = time.time() - wall_offset
  iter_walls = []
  with StopRequest() as stop, progress.heartbeat():
    for it in range(first, config.num_global_iters + 1):
      t0 = time.time()
      info = runner.run_iteration()
      params = runner.eval_params()
      ev = evaluate(params)
      runners.finite_check(it, parameters=bool(_all_finite(params)), test_loss=ev["test_loss"])
      iter_walls.append(time.time() - t0)
      row = dict(global_iteration=it, server_updates=info.pop("server_updates"),
                 client_steps=info.pop("client_steps"),
                 simulated_time_s=info.pop("simulated_time_s"),
                 wall_time_s=time.time() - start, **ev, **info)
      writer.append(row)
      progress.update(row)
      if (it % config.checkpoint_every == 0 or it == config.num_global_iters
          or stop.signum is not None):
        state = runner.state_dict()
        device = state.pop("device")
        ckpt.save(it, device, dict(runner=state, wall_time_s=row["wall_time_s"]))
      if stop.signum is not None:
        ckpt.close()
        raise SystemExit(128 + stop.signum)
  ckpt.close()
  if writer.rows:
    progress.update(writer.rows[-1], force=True)
  if not iter_walls:   # resumed at the end (e.g. killed before summary.json was written)
    iter_walls = iteration_walls(writer.rows)
  steady = iter_walls[1:] or iter_walls
  return writer.write_summary(dict(
      mean_iter_wall_s=float(np.mean(steady)) if steady else None,
      first_iter_wall_s=float(iter_walls[0]) if iter_walls else None,
      seed=config.seed, algorithm=config.algorithm,
      generate=config.algorithm == "gas" and bool(config.generate)))
