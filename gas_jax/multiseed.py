"""The runs axis: several seeds of one GAS experiment vmapped in one program (`config.seeds`).

    python -m gas_jax.main --config=configs/digits.py --config.seeds=0,1,2 --workdir=runs/s

Each seed is the run `--config.seed=s` would make - its own partition, client speeds, schedule,
minibatches, initialisation and sampling keys - and writes the same files to `WORKDIR/seed<s>/`;
`WORKDIR/summary.json` adds the mean and standard deviation over the seeds.

Why this works: in GAS every client step adds one minibatch to the activation buffer and the
server updates after every C-th step (spec §1.5), whatever the schedule. So tick j of the
program runs the j-th client event of every seed (vmapped over seeds: each seed's own client,
slot, minibatch and key) and, when j is a multiple of C, the server updates of all seeds in
one vmapped call (`runners/seeds_steps.py`; the statistics' occasional compressions run from
the host, one seed's label at a time). With cohorts (`execution.cohort_size` != 1, the
accelerator default) a tick runs one segment of every seed instead: its cohorts up to its next
server update or aggregation, the j-th cohorts of all seeds in one call (padded to a common
length), so that the seeds' server updates again fall together. The seeds only differ in when
they aggregate (the host knows from each seed's scheduler): a seed's global iteration ends at
its own tick, where its models are evaluated and its row written; a seed that has finished its
T iterations rides along masked. Measured on an H200 (docs/benchmarks.md): for
CIFAR-10/AlexNet a vmapped server update of 3 seeds costs 2.5x one seed's, and 3 vmapped seeds
took 0.52 s per global iteration where 3 separate runs would take about 0.45 s; on the 2-core
CPU vmapped convolutions are slower than separate calls, so there the seeds run in a host
loop.

`execution.vmap_seeds` picks vmapped (the default on accelerators) or a host loop over the
seeds' own states (the CPU default). The whole multi-seed state is checkpointed in
WORKDIR/checkpoints whenever a seed completes a multiple of `checkpoint_every` iterations (and
on SIGTERM/SIGINT); a restarted run resumes from it with the same numbers, also with a larger
`num_global_iters`. At the end the final state of each seed is checkpointed in its own folder
in the single-run layout, so `--config.seed=s --workdir=WORKDIR/seed<s>` continues one seed.

Not (yet) supported with `seeds`: gradient dissimilarity and the FL/SFL baselines (run those
per seed, e.g. with launch/compare.py).
"""
import json
import os
import time
from typing import Dict

import jax
import numpy as np
from absl import logging

from gas_jax import checkpoint
from gas_jax import engine
from gas_jax import metrics as metrics_lib
from gas_jax import runners
from gas_jax import stats as stats_lib
from gas_jax import train
from gas_jax import workdir as workdir_lib
from gas_jax.runners.seeds_runner import SeedsGasRunner, vmap_seeds


class _Driver:
  """The multi-seed loop: per-seed rows, evaluation, checkpoints (train.py's loop, per seed)."""

  def __init__(self, config, workdir: str):
    self.config, self.workdir = config, workdir
    self.seeds = [int(s) for s in config.seeds]
    contexts = []
    for s in self.seeds:
      contexts.append(train.build_context(train.seed_config(config, s),
                                          like=contexts[0] if contexts else None))
    self.contexts = contexts

  def start(self) -> None:
    """Restores the newest checkpoint and writes the config files (under the workdir lock)."""
    config, workdir, contexts = self.config, self.workdir, self.contexts
    self.runner = SeedsGasRunner(contexts, config.algorithm == "gas" and bool(config.generate),
                                 vmap_seeds(config))
    ds = contexts[0].dataset
    self.evaluate = train.Evaluator(contexts[0].model, ds.x_test, ds.y_test,
                                    config.eval_batch_size)
    S = len(self.seeds)
    self.ticks, self.elapsed0 = 0, 0.0
    self.active = np.ones(S, bool)
    self.client_hist, self.server_hist = [[] for _ in range(S)], [[] for _ in range(S)]
    self.walls, self.last_end = [[] for _ in range(S)], [0.0] * S
    self.ckpt = checkpoint.Checkpointer(workdir, config.checkpoints_to_keep)
    rows = [[] for _ in range(S)]
    restored = self.ckpt.restore_latest(self.runner.device_state())
    if restored is not None:
      self.ticks, device, host = restored
      self.runner.load_device_state(device)
      self.runner.load_host_state(host["runner"])
      for k in ("client_hist", "server_hist", "walls", "last_end"):
        setattr(self, k, host[k])
      self.elapsed0 = float(host["elapsed"])
      rows = [metrics_lib.read_rows(os.path.join(workdir, f"seed{s}"))[:n]
              for s, n in zip(self.seeds, host["rows"])]
      logging.info("resuming %d seeds from the checkpoint at tick %d", S, self.ticks)
    self.active = np.array([sch.global_iters < config.num_global_iters
                            for sch in self.runner.schedulers])
    if metrics_lib.is_primary():
      metrics_lib.atomic_write(os.path.join(workdir, "config.json"),
                               json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    self.writers = []
    for s, ctx, r in zip(self.seeds, contexts, rows):
      w = metrics_lib.MetricsWriter(os.path.join(workdir, f"seed{s}"), r)
      w.write_config(ctx.config.to_dict())
      self.writers.append(w)

  def save(self) -> None:
    host = dict(runner=self.runner.host_state(), client_hist=self.client_hist,
                server_hist=self.server_hist, walls=self.walls, last_end=self.last_end,
                elapsed=self.elapsed(), rows=[len(w.rows) for w in self.writers])
    self.ckpt.save(self.ticks, self.runner.device_state(), host)

  def elapsed(self) -> float:
    return self.elapsed0 + time.time() - self.start

  def collect(self, pending) -> None:
    """Fetches the queued tick outputs into the per-seed histories."""
    fetched = jax.device_get([o for _, o in pending])
    for (evs, _), out in zip(pending, fetched):
      for s, seed_events in enumerate(evs):
        if not seed_events:
          continue
        c_out, s_out = self.runner.seed_outputs(out, s, len(seed_events))
        self.client_hist[s].extend((float(l), bool(f)) for l, f in
                                   zip(c_out["client_loss"], c_out["grad_finite"]))
        if s_out is not None:
          engine.check_gen_rows([s_out])
          self.server_hist[s].append((float(s_out["server_loss"]), bool(s_out["grad_finite"]),
                                      float(s_out["generated"]),
                                      int(s_out.get("stats_fallbacks", 0))))

  def row(self, s: int, ev) -> dict:
    """Seed s finished a global iteration at event ev: evaluate, check, write its row."""
    runner = self.runner
    it = runner.schedulers[s].global_iters
    c_loss, c_fin = zip(*self.client_hist[s])
    # (a checkpoint written before the fallback count was recorded holds 3-tuples)
    hist = [tuple(h) + (0,) * (4 - len(h)) for h in self.server_hist[s]]
    s_loss, s_fin, gen, fallbacks = zip(*hist) if hist else ((), (True,), (), ())
    runners.finite_check(it, client_loss=c_loss, client_gradient=c_fin,
                         server_loss=np.asarray(s_loss, float), server_gradient=s_fin)
    ev_metrics = self.evaluate(runner.eval_params(s))
    runners.finite_check(it, test_loss=ev_metrics["test_loss"])
    now = self.elapsed()
    self.walls[s].append(now - self.last_end[s])
    self.last_end[s] = now
    row = dict(global_iteration=it, server_updates=int(runner.server_updates[s]),
               client_steps=int(runner.client_steps[s]), simulated_time_s=ev.iteration_time,
               wall_time_s=now, **ev_metrics, client_loss=float(np.mean(c_loss)),
               server_loss=float(np.mean(s_loss)) if s_loss else None,
               generated_per_update=float(np.mean(gen)) if gen else 0.0,
               stats_fallbacks=stats_lib.report_fallbacks(
                   it, [dict(stats_fallbacks=f) for f in fallbacks]))
    self.writers[s].append(row)
    self.client_hist[s], self.server_hist[s] = [], []
    if it >= self.config.num_global_iters:
      self.active[s] = False
    return row

  def run(self) -> Dict:
    config, T = self.config, self.config.num_global_iters
    self.start = time.time()
    progress = metrics_lib.Progress(T, config.log_every_s, len(self.writers[0].rows))
    logging.info("%d seeds %s %s", len(self.seeds), self.seeds,
                 "vmapped in one program" if self.runner.vmapped else "in a host loop")
    pending = []
    with train.StopRequest() as stop, progress.heartbeat():
      while self.active.any():
        events, out = self.runner.tick(self.active)
        self.ticks += 1
        pending.append((events, out))
        done_now = [s for s, evs in enumerate(events) if evs and evs[-1].aggregate]
        if not done_now:
          continue
        self.collect(pending)
        pending = []
        due = False
        for s in done_now:
          row = self.row(s, events[s][-1])
          due |= row["global_iteration"] % config.checkpoint_every == 0
          if s == 0:
            progress.update(row)
        # the heartbeat follows the slowest seed (seed 0 may finish first)
        progress.done = min(int(sch.global_iters) for sch in self.runner.schedulers)
        if due or stop.signum is not None or not self.active.any():
          self.save()
        if stop.signum is not None:
          self.ckpt.close()
          raise SystemExit(128 + stop.signum)
    self.ckpt.close()
    return self.finish()

  def finish(self) -> Dict:
    config, T = self.config, self.config.num_global_iters
    # Final models: each seed folder resumes alone. Idempotent: a rerun after an interruption
    # here keeps the seeds' final checkpoints already written and writes the rest.
    for i, w in enumerate(self.writers):
      ckpt = checkpoint.Checkpointer(w.workdir, config.checkpoints_to_keep)
      if not ckpt.has_step(T):
        state = self.runner.seed_state_dict(i)
        ckpt.save(T, state.pop("device"),
                  dict(runner=state, wall_time_s=w.rows[-1]["wall_time_s"]))
      ckpt.close()
    summaries = []
    for s, w, wl in zip(self.seeds, self.writers, self.walls):
      wl = wl or train.iteration_walls(w.rows)
      steady = wl[1:] or wl
      summaries.append(w.write_summary(dict(
          mean_iter_wall_s=float(np.mean(steady)) if steady else None,
          first_iter_wall_s=float(wl[0]) if wl else None, seed=s,
          algorithm=config.algorithm, seeds_vmapped=len(self.seeds),
          generate=config.algorithm == "gas" and bool(config.generate))))
    finals = np.array([x["final_accuracy"] for x in summaries], np.float64)
    total = dict(seeds=self.seeds, algorithm=config.algorithm, global_iterations=T,
                 final_accuracy_mean=float(finals.mean()),
                 final_accuracy_std=float(finals.std()),
                 final_accuracy=[float(f) for f in finals], wall_time_s=self.elapsed(),
                 per_seed=[os.path.join(self.workdir, f"seed{s}") for s in self.seeds])
    if metrics_lib.is_primary():
      metrics_lib.atomic_write(os.path.join(self.workdir, "summary.json"),
                               json.dumps(total, indent=2) + "\n")
    return total


def train_seeds(config, workdir: str, overwrite: bool = False) -> Dict:
  """Runs `config.seeds` in one program (resuming from WORKDIR/checkpoints); returns the
  summary over seeds. The workdir is locked and checked as for one seed (`train`)."""
  driver = _Driver(config, workdir)
  lock = workdir_lib.WorkdirLock(workdir, metrics_lib.is_primary())
  try:
    summary = train.claim(config, workdir, overwrite, lock)
    if summary is not None:
      return summary
    driver.start()
    return driver.run()
  finally:
    lock.release()
