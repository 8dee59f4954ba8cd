"""The run loop's callbacks (`gas_jax.loop`): evaluation, metrics files, progress, checkpoints.

`standard(...)` gives the list every run uses, in order: `Checkpoints` (restores first, saves
after the rows), `Evaluate`, `WriteMetrics`, `ShowProgress`.
"""
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from gas_jax import checkpoint
from gas_jax import config as config_lib
from gas_jax import evaluation
from gas_jax import metrics as metrics_lib
from gas_jax.loop import Callback, Lane, Loop


def iteration_walls(rows) -> list:
  """Wall seconds of each global iteration from the rows' cumulative wall_time_s."""
  ends = [float(r["wall_time_s"]) for r in rows]
  return [b - a for a, b in zip([0.0] + ends[:-1], ends)]


class Evaluate(Callback):
  """Test accuracy and loss of the runner's models after every `eval_every`-th global iteration
  of a lane and after the last one (`metrics.is_evaluated`; the other rows hold null), the same
  for every method and for each seed of the runs axis; and the divergence guard: the parameters
  after every global iteration, the test loss when evaluated."""

  def __init__(self, evaluator: evaluation.Evaluator, eval_every: int = 1):
    self.evaluator, self.eval_every = evaluator, eval_every

  def _params(self, loop: Loop, lane: Lane):
    return loop.runner.eval_params(*([lane.index] if loop.multi else []))

  def on_start(self, loop: Loop) -> None:
    """A run resumed with num_global_iters lowered to the iterations it has done: its new last
    iteration is evaluated now, from the restored models (those of that iteration)."""
    for lane in loop.lanes:
      if lane.done != loop.num_iters or lane.rows[-1].get("test_accuracy") is not None:
        continue
      if loop.multi and not loop.runner.at_row_boundary(lane.index):
        raise config_lib.RunError(
            f"seed {lane.seed}: global iteration {lane.done}, now the last, was not evaluated "
            f"(eval_every={self.eval_every}) and the checkpoint holds its models from after it; "
            f"resume with num_global_iters > {lane.done}")
      params = self._params(loop, lane)
      ev = self.evaluator(params)
      evaluation.finite_check(lane.done, test_loss=ev["test_loss"])
      lane.rows[-1].update(ev)
      logging.info("global iteration %d is now the last: evaluated it (test_accuracy %.4f)",
                   lane.done, ev["test_accuracy"])

  def fill_row(self, loop: Loop, lane: Lane, row: Dict) -> None:
    params = self._params(loop, lane)
    it = row["global_iteration"]
    if not metrics_lib.is_evaluated(it, self.eval_every, loop.num_iters):
      evaluation.finite_check(it, parameters=bool(evaluation.all_finite(params)))
      row.update(test_accuracy=None, test_loss=None)
      return
    ev = self.evaluator(params)
    evaluation.finite_check(it, parameters=bool(evaluation.all_finite(params)),
                            test_loss=ev["test_loss"])
    row.update(ev)


class WriteMetrics(Callback):
  """config.json, metrics.jsonl and summary.json of every lane (`gas_jax.metrics`); with several
  lanes also WORKDIR/config.json and WORKDIR/summary.json over the seeds."""

  def __init__(self, config, workdir: str, plan: Optional[Dict] = None):
    self.config, self.workdir, self.plan = config, workdir, plan
    self.writers: List[metrics_lib.MetricsWriter] = []

  def _config_dict(self, config) -> Dict:
    d = config.to_dict()
    if self.plan is not None:
      d["execution_plan"] = self.plan
    return d

  def on_start(self, loop: Loop) -> None:
    if loop.multi and metrics_lib.is_primary():
      metrics_lib.atomic_write(os.path.join(self.workdir, "config.json"),
                               json.dumps(self._config_dict(self.config), indent=2,
                                          sort_keys=True) + "\n")
    for lane in loop.lanes:
      w = metrics_lib.MetricsWriter(lane.workdir, lane.rows)
      w.write_config(self._config_dict(lane.config))
      if lane.rows:     # resumed: the checkpoint's rows (`Evaluate.on_start` may fill one in)
        w.flush()
      self.writers.append(w)

  def on_row(self, loop: Loop, lane: Lane, row: Dict) -> None:
    self.writers[lane.index].append(row)

  def on_finish(self, loop: Loop) -> None:
    config = self.config
    every = config.get("eval_every", 1)
    targets = tuple(config.get("report", {}).get("targets", ()))
    summaries = []
    for lane, w in zip(loop.lanes, self.writers):
      walls, starts = lane_walls(lane, w.rows)
      steady = metrics_lib.steady_walls(walls, starts)
      extra = dict(mean_iter_wall_s=float(np.mean(steady)) if steady else None,
                   mean_iter_wall_iters=len(steady),
                   first_iter_wall_s=float(walls[0]) if walls else None, seed=lane.seed,
                   algorithm=config.algorithm)
      if loop.multi:
        extra["seeds_vmapped"] = len(loop.lanes)
      extra["generate"] = config.algorithm == "gas" and bool(config.generate)
      summaries.append(w.write_summary(extra, every, targets))
    if not loop.multi:
      loop.result = summaries[0]
      return
    finals = np.array([x["final_accuracy"] for x in summaries], np.float64)
    total = dict(seeds=[lane.seed for lane in loop.lanes], algorithm=config.algorithm,
                 global_iterations=loop.num_iters, final_accuracy_mean=float(finals.mean()),
                 final_accuracy_std=float(finals.std()),
                 final_accuracy=[float(f) for f in finals], wall_time_s=loop.elapsed(),
                 per_seed=[lane.workdir for lane in loop.lanes], eval_every=every,
                 final_accuracy_evals=summaries[0]["final_accuracy_evals"],
                 final_accuracy_window=summaries[0]["final_accuracy_window"])
    if metrics_lib.is_primary():
      metrics_lib.atomic_write(os.path.join(self.workdir, "summary.json"),
                               json.dumps(total, indent=2) + "\n")
    loop.result = total


def lane_walls(lane: Lane, rows) -> Tuple[List[float], List[int]]:
  """(wall seconds of each global iteration, indices of those each process timed first).
  Iterations timed before the lane's recorded walls (older checkpoints) come from the rows'
  wall_time_s, the first of them counted as a process's first."""
  prefix = iteration_walls(rows)[:max(lane.done - len(lane.walls), 0)]
  starts = ([0] if prefix else []) + [len(prefix) + i for i in lane.starts]
  return prefix + list(lane.walls), starts


class ShowProgress(Callback):
  """A progress line at least every `log_every_s`, also while an iteration is still running;
  it follows the first lane's rows and, for the heartbeat, the slowest lane."""

  def __init__(self, config):
    self.config = config
    self.progress = None

  def on_start(self, loop: Loop) -> None:
    self.progress = metrics_lib.Progress(loop.num_iters, self.config.log_every_s,
                                         min(lane.done for lane in loop.lanes))
    loop.stack.enter_context(self.progress.heartbeat())

  def on_row(self, loop: Loop, lane: Lane, row: Dict) -> None:
    if lane is loop.lanes[0]:
      self.progress.update(row)

  def on_advance(self, loop: Loop, finished: Sequence[Lane]) -> None:
    self.progress.done = min(lane.done for lane in loop.lanes)

  def on_finish(self, loop: Loop) -> None:
    if loop.lanes[0].rows:
      self.progress.update(loop.lanes[0].rows[-1], force=True)


class Checkpoints(Callback):
  """Restores the newest checkpoint at start; saves the runner's whole state every
  `checkpoint_every` global iterations of any lane, at the last one and on a stop request.

  The checkpoint's step is the number of `run_iteration()` calls (a single seed: its global
  iteration). Host item: `runner` (the runner's host state), `wall_time_s` (the run's wall time
  so far) and `rows` (each lane's row count). With several lanes, each lane's final state is
  also written to its own folder in the single-run layout, so a seed folder continues alone."""

  def __init__(self, config, workdir: str):
    self.config, self.workdir = config, workdir
    self.ckpt = None

  def on_start(self, loop: Loop) -> None:
    self.ckpt = checkpoint.Checkpointer(self.workdir, self.config.checkpoints_to_keep)
    restored = self.ckpt.restore_latest(loop.runner.state_dict()["device"])
    if restored is None:
      return
    step, device, host = restored
    try:
      host = _upgrade(host, loop.multi)
      loop.runner.load_state_dict(dict(host["runner"], device=device))
      counts = [int(n) for n in host.get("rows", [step])]
      loop.wall_offset = float(host["wall_time_s"])
      walls = host.get("walls") or [[] for _ in loop.lanes]
      # (checkpoints before `starts`: the first recorded wall was the run's first iteration)
      starts = host.get("starts") or [[0] if w else [] for w in walls]
    except KeyError as e:
      raise config_lib.RunError(
          f"the checkpoint at step {step} in {self.ckpt.directory} was written by another "
          f"version of gas-jax (missing {e}); use a new --workdir, or --overwrite") from None
    loop.advances = step
    for lane, n, w, first in zip(loop.lanes, counts, walls, starts):
      lane.rows[:] = metrics_lib.read_rows(lane.workdir)[:n]
      lane.walls[:] = [float(x) for x in w][-n:] if n else []
      lane.starts[:] = [int(i) for i in first if int(i) < len(lane.walls)]
      if len(lane.rows) != n:
        raise config_lib.RunError(
            f"{lane.workdir}/metrics.jsonl has {len(lane.rows)} rows but the checkpoint holds "
            f"{n}: the run's files were changed; use a new --workdir, or --overwrite")
    if loop.multi:
      logging.info("resuming %d seeds from the checkpoint at step %d in %s (global iterations "
                   "%s)", len(counts), step, self.ckpt.directory, ", ".join(map(str, counts)))
    else:
      logging.info("resuming from the checkpoint at global iteration %d in %s", step,
                   self.ckpt.directory)

  def _save(self, loop: Loop) -> None:
    state = loop.runner.state_dict()
    device = state.pop("device")
    self.ckpt.save(loop.advances, device, dict(
        runner=state, wall_time_s=loop.elapsed(), rows=[lane.done for lane in loop.lanes],
        walls=[list(lane.walls) for lane in loop.lanes],
        starts=[list(lane.starts) for lane in loop.lanes]))

  def on_advance(self, loop: Loop, finished: Sequence[Lane]) -> None:
    every, T = self.config.checkpoint_every, loop.num_iters
    due = any(lane.done % every == 0 or lane.done == T for lane in finished)
    if due or loop.stop.signum is not None:
      self._save(loop)

  def on_finish(self, loop: Loop) -> None:
    self.ckpt.close()
    if not loop.multi:
      return
    # Final models: each seed folder resumes alone. Idempotent: a rerun after an interruption
    # here keeps the seeds' final checkpoints already written and writes the rest.
    T = loop.num_iters
    for i, lane in enumerate(loop.lanes):
      ckpt = checkpoint.Checkpointer(lane.workdir, self.config.checkpoints_to_keep)
      if not ckpt.has_step(T):
        state = loop.runner.lane_state_dict(i)
        ckpt.save(T, state.pop("device"),
                  dict(runner=state, wall_time_s=lane.rows[-1]["wall_time_s"], rows=[T],
                       walls=[list(lane.walls)], starts=[list(lane.starts)]))
      ckpt.close()

  def on_close(self, loop: Loop) -> None:
    if self.ckpt is not None:
      self.ckpt.close()


def _upgrade(host: Dict, multi: bool) -> Dict:
  """A checkpoint's host item in this version's layout. Runs-axis checkpoints written before
  the run loop (gas-jax of 2026-12-01: `multiseed._Driver`) kept the seeds' pending outputs and
  wall times beside the runner's state, with 3-tuples of server outputs before the fallback
  count was recorded."""
  if multi and "client_hist" in host and "client_hist" not in host["runner"]:
    server = [[list(h) + [0] * (4 - len(h)) for h in lane] for lane in host["server_hist"]]
    host = dict(host, runner=dict(host["runner"], client_hist=host["client_hist"],
                                  server_hist=server),
                wall_time_s=host["elapsed"])
  return host


def standard(config, workdir: str, evaluator: evaluation.Evaluator,
             plan: Optional[Dict] = None) -> List[Callback]:
  """The callbacks of every run, in order."""
  return [Checkpoints(config, workdir), Evaluate(evaluator, config.get("eval_every", 1)),
          WriteMetrics(config, workdir, plan), ShowProgress(config)]
