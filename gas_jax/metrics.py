"""Run outputs: config.json, metrics.jsonl (one row per global iteration), summary.json, and a
progress line with ETA. Every file is written atomically (temp file + os.replace), so a crash
never leaves a half-written file; files get the usual permissions (0666 less the umask).

summary.json of one run (README "Outputs"): final_accuracy (mean test accuracy of the last
`FINAL_WINDOW` global iterations), best_accuracy, global_iterations, simulated_time_s and
wall_time_s (of the last row), mean_iter_wall_s (wall seconds per global iteration, the first
one left out), first_iter_wall_s (compilation included), seed, algorithm, generate (GAS with
generated activations), and with `config.seeds` seeds_vmapped. WORKDIR/summary.json of a
multi-seed run: seeds, algorithm, global_iterations, final_accuracy (per seed),
final_accuracy_mean, final_accuracy_std, wall_time_s and per_seed (the seed folders).
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

FINAL_WINDOW = 5   # final_accuracy = mean test accuracy over the last 5 global iterations


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


def summarize(rows: List[Dict], extra: Optional[Dict] = None) -> Dict:
  accs = [r["test_accuracy"] for r in rows]
  last = accs[-FINAL_WINDOW:]
  out = dict(
      final_accuracy=sum(last) / len(last) if last else float("nan"),
      best_accuracy=max(accs) if accs else float("nan"),
      global_iterations=len(rows),
      simulated_time_s=rows[-1]["simulated_time_s"] if rows else 0.0,
      wall_time_s=rows[-1]["wall_time_s"] if rows else 0.0)
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
    if not self.primary:
      return
    atomic_write(self.metrics_path, "".join(json.dumps(r) + "\n" for r in self.rows))

  def write_summary(self, extra: Optional[Dict] = None) -> Dict:
    summary = summarize(self.rows, extra)
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
    self._lock = threading.Lock()

  def update(self, row: Dict, force: bool = False) -> None:
    now = time.time()
    done = row["global_iteration"]
    with self._lock:
      self.last_step = now
      self.done = self._seen_done = max(self.done, done)
      if done == self.last_logged or (
          not force and now - self.last < self.every_s and done < self.total):
        return
      self.last, self.last_any, self.last_logged = now, now, done
    rate = (now - self.start) / max(done - self.start_iter, 1)
    eta = rate * max(self.total - done, 0)
    logging.info("iteration %d/%d  test_accuracy %.4f  test_loss %.4f  simulated %.1f s  "
                 "wall %.1f s  ETA %.0f s", done, self.total, row["test_accuracy"],
                 row["test_loss"], row["simulated_time_s"], row["wall_time_s"], eta)

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
