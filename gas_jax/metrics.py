"""Run outputs: config.json, metrics.jsonl (one row per global iteration), summary.json, and a
progress line with ETA. Every file is written atomically (temp file + os.replace), so a crash
never leaves a half-written file; files get the usual permissions (0666 less the umask).

summary.json of one run (docs/configuration.md, "What a run writes"): final_accuracy (mean test accuracy of the last
`FINAL_WINDOW` evaluations), final_accuracy_evals (how many it averaged: fewer in a run with fewer
evaluations), final_accuracy_window (the same in words), eval_every, best_accuracy,
time_to_accuracy (`time_to_accuracy`), global_iterations, simulated_time_s and wall_time_s (of
the last row), mean_iter_wall_s (wall seconds per global iteration, the first iteration of each
process left out: `steady_walls`) with mean_iter_wall_iters (how many it averaged),
first_iter_wall_s (compilation included), seed, algorithm, generate (GAS with generated
activations), and with `config.seeds` seeds_vmapped. WORKDIR/summary.json of a multi-seed run:
seeds, algorithm, global_iterations, final_accuracy (per seed), final_accuracy_mean,
final_accuracy_std, final_accuracy_evals, final_accuracy_window, eval_every, wall_time_s and
per_seed (the seed folders).

Evaluations (`eval_every` = N): global iterations N, 2N, ... and the last one, T, are evaluated;
the other rows hold test_accuracy and test_loss null (`is_evaluated`). Only the evaluations of
the run's cadence enter the summary (`evaluations`): a row evaluated as the last iteration of a
shorter run that was then continued to a larger T keeps its test accuracy in metrics.jsonl but
is left out, so the summary is the one of an uninterrupted run.
"""
import contextlib
import json
import os
import tempfile
import threading
import time
from typing import Dict, List, Optional

import jax
from absl import logging

FINAL_WINDOW = 5   # final_accuracy = mean test accuracy over the last 5 evaluations


def atomic_write(path: str, text: str) -> None:
  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    os.fchmod(fd, 0o666 & ~_UMASK)   # mkstemp makes 0600
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def _read_umask() -> int:
  mask = os.umask(0)   # (read once, at import: setting it is process-wide)
  os.umask(mask)
  return mask


_UMASK = _read_umask()


def is_evaluated(global_iteration: int, eval_every: int, num_iters: int) -> bool:
  """Whether global iteration `global_iteration` (1-based) of a T = `num_iters` run is
  evaluated: every `eval_every`-th one, and the last."""
  return global_iteration % eval_every == 0 or global_iteration == num_iters


def evaluations(rows: List[Dict], eval_every: int = 1) -> List[Dict]:
  """The rows of the run's evaluation cadence that hold a test accuracy (T: the last row)."""
  if not rows:
    return []
  last = rows[-1]["global_iteration"]
  return [r for r in rows if r.get("test_accuracy") is not None
          and is_evaluated(r["global_iteration"], eval_every, last)]


def target_key(target: float) -> str:
  """time_to_accuracy's key of a target accuracy: '0.6'."""
  return str(float(target))


def time_to_accuracy(rows: List[Dict], targets, eval_every: int = 1) -> Dict:
  """{target: {global_iteration, simulated_time_s} of the first evaluation with test accuracy
  >= target, or None if none reaches it} (issue #28: the paper's "time to reach 60 %")."""
  evals = evaluations(rows, eval_every)
  out = {}
  for t in targets:
    hit = next((r for r in evals if r["test_accuracy"] >= t), None)
    out[target_key(t)] = None if hit is None else dict(
        global_iteration=int(hit["global_iteration"]),
        simulated_time_s=float(hit["simulated_time_s"]))
  return out


def window_text(n: int, eval_every: int) -> str:
  """final_accuracy's window in words."""
  what = "the last evaluation" if n == 1 else f"mean of the last {n} evaluations"
  every = "every global iteration" if eval_every == 1 else f"every {eval_every} global iterations"
  return f"{what} ({every} and the last)"


def final_evals(summary: Dict) -> int:
  """How many evaluations a summary's final_accuracy averaged (summaries written before
  `final_accuracy_evals`: every iteration was evaluated, so min(5, T))."""
  if "final_accuracy_evals" in summary:
    return int(summary["final_accuracy_evals"])
  return min(FINAL_WINDOW, int(summary.get("global_iterations", FINAL_WINDOW)))


def evals_phrase(counts) -> str:
  """'mean of the last 5 evaluations' for the counts of several runs ('the last 2-5' when they
  differ)."""
  lo, hi = min(counts), max(counts)
  if hi == 1:
    return "the last evaluation"
  return f"mean of the last {lo if lo == hi else f'{lo}-{hi}'} evaluations"


def steady_walls(walls: List[float], starts: List[int]) -> List[float]:
  """The iteration wall times of `walls` that were not the first of their process (`starts`:
  the indices of the walls each process timed first: restore, compilation)."""
  firsts = set(starts)
  return [w for i, w in enumerate(walls) if i not in firsts]


def summarize(rows: List[Dict], extra: Optional[Dict] = None, eval_every: int = 1,
              targets=()) -> Dict:
  evals = evaluations(rows, eval_every)
  accs = [r["test_accuracy"] for r in evals]
  last = accs[-FINAL_WINDOW:]
  out = dict(
      final_accuracy=sum(last) / len(last) if last else None,
      best_accuracy=max(accs) if accs else None,
      global_iterations=len(rows),
      simulated_time_s=rows[-1]["simulated_time_s"] if rows else 0.0,
      wall_time_s=rows[-1]["wall_time_s"] if rows else 0.0,
      final_accuracy_evals=len(last),
      final_accuracy_window=window_text(len(last), eval_every),
      eval_every=eval_every,
      time_to_accuracy=time_to_accuracy(rows, targets, eval_every))
  for key in ("clients_dispatched", "updates_lost"):   # clients that come and go (issue #29)
    if rows and key in rows[-1]:
      out[f"{key}_total"] = int(sum(r.get(key) or 0 for r in rows))
  out.update(extra or {})
  return out


def is_primary() -> bool:
  """Only process 0 writes run outputs in a multi-process (jax.distributed) run."""
  return jax.process_index() == 0


class MetricsWriter:
  """Holds the rows of a run and rewrites metrics.jsonl atomically after each iteration.

  In a multi-process run every process keeps the rows (they are identical) but only process 0
  writes files."""

  def __init__(self, workdir: str, rows: Optional[List[Dict]] = None):
    self.workdir = workdir
    self.rows: List[Dict] = list(rows or [])
    self.primary = is_primary()
    if self.primary:
      os.makedirs(workdir, exist_ok=True)
    else:
      logging.info("process %d: run outputs are written by process 0", jax.process_index())

  @property
  def metrics_path(self) -> str:
    return os.path.join(self.workdir, "metrics.jsonl")

  def write_config(self, config_dict: Dict) -> None:
    if not self.primary:
      return
    atomic_write(os.path.join(self.workdir, "config.json"),
                 json.dumps(config_dict, indent=2, sort_keys=True) + "\n")

  def append(self, row: Dict) -> None:
    self.rows.append(row)
    self.flush()

  def flush(self) -> None:
    """Rewrites metrics.jsonl from the rows held (after a resume filled one in)."""
    if self.primary:
      atomic_write(self.metrics_path, "".join(json.dumps(r) + "\n" for r in self.rows))

  def write_summary(self, extra: Optional[Dict] = None, eval_every: int = 1,
                    targets=()) -> Dict:
    summary = summarize(self.rows, extra, eval_every, targets)
    if not self.primary:
      return summary
    atomic_write(os.path.join(self.workdir, "summary.json"),
                 json.dumps(summary, indent=2) + "\n")
    return summary


def read_rows(workdir: str) -> List[Dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class Progress:
  """Logs 'iteration x/T, accuracy, simulated time, ETA' at least every `every_s` seconds
  after a global iteration, and from `heartbeat()` 'iteration x/T still running' while one runs
  long (compilation, long iterations): only when neither a line of either kind nor a finished
  iteration (a row, or `done` going up: the slowest lane of the runs axis) came within
  `every_s`, so iterations shorter than `every_s` never get one."""

  def __init__(self, total: int, every_s: float = 10.0, start_iter: int = 0):
    self.total, self.every_s = total, every_s
    self.start = time.time()
    self.start_iter = start_iter
    self.done = start_iter
    self.last = -float("inf")      # the last iteration line
    self.last_any = self.start     # the last line of either kind
    self.last_step = self.start    # the last finished iteration seen
    self._seen_done = start_iter
    self.last_logged = None
    self.last_eval = None          # (global iteration, test accuracy, test loss) of the latest
    self._lock = threading.Lock()

  def update(self, row: Dict, force: bool = False) -> None:
    now = time.time()
    done = row["global_iteration"]
    if row.get("test_accuracy") is not None:
      self.last_eval = (done, row["test_accuracy"], row["test_loss"])
    with self._lock:
      self.last_step = now
      self.done = self._seen_done = max(self.done, done)
      if done == self.last_logged or (
          not force and now - self.last < self.every_s and done < self.total):
        return
      self.last, self.last_any, self.last_logged = now, now, done
    rate = (now - self.start) / max(done - self.start_iter, 1)
    eta = rate * max(self.total - done, 0)
    logging.info("iteration %d/%d  %s  simulated %.1f s  wall %.1f s  ETA %.0f s", done,
                 self.total, self._accuracy(done), row["simulated_time_s"], row["wall_time_s"],
                 eta)

  def _accuracy(self, done: int) -> str:
    """'test_accuracy A  test_loss L' of the latest evaluation (its iteration if earlier)."""
    if self.last_eval is None:
      return "not evaluated yet"
    it, acc, loss = self.last_eval
    return (f"test_accuracy {acc:.4f}  test_loss {loss:.4f}" +
            ("" if it == done else f" (evaluated at iteration {it})"))

  def beat(self) -> bool:
    """Logs a 'still running' line if no line was logged and no iteration finished for
    `every_s`; True if it did."""
    now = time.time()
    with self._lock:
      if self.done != self._seen_done:     # the slowest lane moved on (`ShowProgress`)
        self._seen_done, self.last_step = self.done, now
      quiet = min(now - self.last_any, now - self.last_step)
      if quiet < self.every_s or self.done >= self.total:
        return False
      self.last_any = now
      it = self.done + 1
    what = " (compiling and running)" if it == self.start_iter + 1 else ""
    logging.info("iteration %d/%d still running%s: %.0f s since this process started", it,
                 self.total, what, now - self.start)
    return True

  @contextlib.contextmanager
  def heartbeat(self):
    """A daemon thread calling `beat` while the block runs."""
    stop = threading.Event()

    def loop():
      while not stop.wait(min(self.every_s, 1.0)):
        self.beat()

    thread = threading.Thread(target=loop, name="progress-heartbeat", daemon=True)
    thread.start()
    try:
      yield self
    finally:
      stop.set()
      thread.join()


def log_run(config, model) -> None:
  """The run's one-line description: algorithm, dataset, model, split and sizes."""
  logging.info("%s on %s: model %s/%s, activation %s, client %d params, server %d params",
               config.algorithm, config.data.name, model.name, model.split,
               model.activation_shape, model.client_params, model.server_params)
