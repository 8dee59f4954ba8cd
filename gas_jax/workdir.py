"""A workdir holds one run: its identity (config.json), a lock, and what may change on resume.

- **Identity.** config.json is the run's fingerprint. Starting in a workdir that holds a run
  compares the new config with the stored one (`check_same_run`): only `RESUMABLE` fields may
  differ (they cannot change the past), and `num_global_iters` may only go below the stored value
  if no more iterations than that are done. Anything else is refused before anything is touched,
  in one line naming the fields; `--overwrite` moves the old run aside (`move_aside`), it never
  deletes it.
- **Lock.** `WorkdirLock` holds an advisory `fcntl` lock on WORKDIR/.lock for the whole run, so
  a second process on the same workdir stops at once with one line naming the holder's PID.
- **Placement.** `placement.check` refuses a workdir inside another run, around one, or a
  system folder, before the lock or anything else is written (`finished_or_check`, `claim`).
- **Finished runs.** `finished_summary` tells a finished run (summary.json at the config's T)
  apart, so a rerun is a no-op that says so.
"""
import fcntl
import json
import math
import os
import socket
import time
from typing import Any, Dict, List, Optional

import jax
import numpy as np
from absl import logging

from gas_jax import metrics as metrics_lib
from gas_jax import variants
from gas_jax import placement
from gas_jax.errors import RunError

# Fields that may differ between the stored config and a resuming one: they change how the run
# is executed, logged or checkpointed, not its numbers (cohorts, server chunks, device meshes and
# vmapped seeds give the same numbers up to float32 rounding: tests/runners/test_equivalence.py,
# tests/run/test_multiseed.py; a checkpoint layout they change is refused by `checkpoint`).
# Every `execution.*` field, and config.json's `execution_plan` (the resolved choices, which
# follow the machine), is of that kind.
RESUMABLE = frozenset({
    "num_global_iters", "checkpoint_every", "checkpoints_to_keep", "eval_batch_size",
    "log_every_s",
})
# `report.*` only says how summary.json reads the rows (time_to_accuracy's targets). Not
# `eval_every`: it decides which rows are evaluated, so final_accuracy and time_to_accuracy.
RESUMABLE_SECTIONS = ("execution.", "execution_plan.", "report.")
# Sections and fields added after runs were stored: a stored config without one continues when
# the new config leaves its feature off (prefix -> (switch field, its "off" value)).
ADDED_SECTIONS = {"privacy.": ("privacy.method", "none"), "eval_examples": ("eval_examples", 0),
                  "eval_every": ("eval_every", 1),
                  "execution.precision": ("execution.precision", "float32"),
                  # clients that come and go (issue #29): each field off at its default
                  "system.speed": ("system.speed", "uniform"),
                  "system.sigma": ("system.speed", "uniform"),
                  "system.redraw_s": ("system.redraw_s", None),
                  "system.availability": ("system.availability", "always"),
                  "system.mean_o": ("system.availability", "always"),
                  "system.trace": ("system.availability", "always"),
                  "system.dropout": ("system.dropout", 0.0),
                  "system.round_deadline_s": ("system.round_deadline_s", None)}
# The paper-as-written switch and the follow-up knobs (docs/paper_as_written.md), each off at
# REF's value.
ADDED_SECTIONS.update({f: (f, v) for f, v in (
    ("variant", "ref"), ("clients.activation_buffer", 0), ("clients.model_buffer", 0),
    ("clients.la_tau", 1.0), ("stats.gen_rows", 0), ("stats.gen_balance", "topup"),
    ("time.placement", "radius"), ("time.uplink", "full"), ("time.bandwidth_hz", 1e7),
    ("time.tx_power_w", 0.2), ("time.noise_psd_w_per_hz", 3.981e-21),
    ("time.path_loss_db_at_1km", 128.1), ("time.path_loss_db_per_decade", 37.6))})
# Execution fields that change the numbers: fixed for the life of a run.
NOT_RESUMABLE = frozenset({"execution.precision"})
CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
_SHOWN = 6   # differing fields named in the message


def normalise(config_dict: Dict) -> Dict:
  """A config dict as config.json stores it (tuples -> lists, ...)."""
  return json.loads(json.dumps(config_dict, sort_keys=True))


def _flatten(d: Any, prefix: str = "") -> Dict[str, Any]:
  if not isinstance(d, dict):
    return {prefix: d}
  out = {}
  for k, v in d.items():
    key = f"{prefix}.{k}" if prefix else str(k)
    if isinstance(v, dict) and v:
      out.update(_flatten(v, key))
    else:
      out[key] = v
  return out


def _same(a, b) -> bool:
  if isinstance(a, bool) or isinstance(b, bool):
    return a is b
  if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
    return True
  return a == b


def resumable(key: str) -> bool:
  """Whether the (flattened) config field `key` may change when a run resumes."""
  return key not in NOT_RESUMABLE and (key in RESUMABLE or key.startswith(RESUMABLE_SECTIONS))


def differences(stored: Dict, new: Dict, done_iters: int = 0) -> List[str]:
  """'field: old -> new' for every field that forbids resuming `stored` with `new`.

  `done_iters`: global iterations the stored run has completed (num_global_iters may go down
  to that)."""
  # Both sides with the paper-as-written switch resolved (a launcher's unresolved config
  # against the resolved config.json of its run: `variants`).
  a = _flatten(normalise(variants.resolve_dict(normalise(stored))))
  b = _flatten(normalise(variants.resolve_dict(normalise(new))))
  out = []
  for key in sorted(set(a) | set(b)):
    if resumable(key) and key != "num_global_iters":
      continue
    if key not in a and _added_and_off(key, b):
      continue
    if key not in a:
      out.append(f"{key}: (not in the stored config) -> {b[key]!r}")
    elif key not in b:
      out.append(f"{key}: {a[key]!r} -> (not in this config)")
    elif key == "num_global_iters":
      if isinstance(b[key], int) and b[key] < done_iters:
        out.append(f"num_global_iters: {a[key]!r} -> {b[key]!r} (the run has already done "
                   f"{done_iters} iterations)")
    elif not resumable(key) and not _same(a[key], b[key]):
      out.append(f"{key}: {a[key]!r} -> {b[key]!r}")
  return out


def _added_and_off(key: str, new: Dict) -> bool:
  """Whether `key` belongs to an `ADDED_SECTIONS` section that `new` (flattened) leaves off."""
  return any(key.startswith(prefix) and new.get(switch) == off
             for prefix, (switch, off) in ADDED_SECTIONS.items())


def read_stored_config(workdir: str) -> Optional[Dict]:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise RunError(f"{path} is unreadable ({e}); it identifies the run in {workdir}: restore "
                   "it, or use a new --workdir, or --overwrite to move the old run aside") from None


def done_iterations(workdir: str) -> int:
  """Rows in WORKDIR/metrics.jsonl (the global iterations the run has recorded)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    return sum(1 for line in f if line.strip())


def check_same_run(workdir: str, config_dict: Dict, done_iters: Optional[int] = None) -> None:
  """Raises RunError (one line) if WORKDIR holds a run that `config_dict` may not continue."""
  stored = read_stored_config(workdir)
  if stored is None:
    return
  if done_iters is None:
    done_iters = done_iterations(workdir)
  diff = differences(stored, config_dict, done_iters)
  if diff:
    shown = "; ".join(diff[:_SHOWN]) + (f"; and {len(diff) - _SHOWN} more" if len(diff) >
                                        _SHOWN else "")
    raise RunError(f"{workdir} holds a different run ({shown}); nothing was changed: use a new "
                   "--workdir, or --overwrite to move the old run aside and start over")


def finished_summary(workdir: str, num_global_iters: int) -> Optional[Dict]:
  """The stored summary.json if it records a run finished at `num_global_iters`, else None."""
  path = os.path.join(workdir, "summary.json")
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      summary = json.load(f)
  except (OSError, ValueError):
    return None
  return summary if summary.get("global_iterations") == num_global_iters else None


def holds_run(workdir: str) -> bool:
  """Whether WORKDIR holds anything of a run (outputs or checkpoints)."""
  if not os.path.isdir(workdir):
    return False
  return any(name != LOCK_FILE for name in os.listdir(workdir))


def move_aside(workdir: str) -> Optional[str]:
  """--overwrite: moves everything in WORKDIR (but the lock) to WORKDIR.replaced-<UTC time>;
  returns that folder, or None if there was nothing to move."""
  if not holds_run(workdir):
    return None
  base = os.path.abspath(workdir).rstrip(os.sep)
  aside = f"{base}.replaced-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
  n = 1
  while os.path.exists(aside):
    n += 1
    aside = f"{base}.replaced-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{n}"
  os.makedirs(aside)
  moved = []
  try:
    for name in sorted(os.listdir(workdir)):
      if name != LOCK_FILE:
        os.rename(os.path.join(workdir, name), os.path.join(aside, name))
        moved.append(name)
  except OSError as e:   # put back what was moved: the run stays whole in one place
    for name in moved:
      os.rename(os.path.join(aside, name), os.path.join(workdir, name))
    os.rmdir(aside)
    raise RunError(f"--overwrite could not move {workdir} aside ({e.strerror}: {e.filename}); "
                   "nothing was changed") from None
  return aside


class WorkdirLock:
  """An advisory lock on WORKDIR/.lock held while the run lives (released by the OS if the
  process dies, also on SIGKILL). `enabled=False` (processes other than 0 of a multi-process
  run, which write nothing) makes it a no-op. `role` names the holder's program in the lock
  file (e.g. "gas_jax.attack"); `hint` ends the refusal's line."""

  def __init__(self, workdir: str, enabled: bool = True, role: str = "",
               hint: str = "wait for it to finish, or use another --workdir"):
    self.workdir, self.enabled, self.role, self.hint = workdir, enabled, role, hint
    self.path = os.path.join(workdir, LOCK_FILE)
    self._f = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()

  def acquire(self) -> "WorkdirLock":
    """Takes the lock or raises RunError naming the holder."""
    if not self.enabled:
      return self
    os.makedirs(self.workdir, exist_ok=True)
    f = open(self.path, "a+")   # pylint: disable=consider-using-with
    try:
      fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      f.seek(0)
      holder = f.read().strip() or "another process"
      f.close()
      raise RunError(f"{self.workdir} is in use by {holder}: {self.hint}") from None
    role = f" ({self.role})" if self.role else ""
    holder = (f"process {os.getpid()} on {socket.gethostname()}{role} since "
              f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime())}\n").encode()
    os.pwrite(f.fileno(), holder, 0)      # written before truncating: never seen empty
    os.ftruncate(f.fileno(), len(holder))
    self._f = f
    return self

  def release(self) -> None:
    if self._f is not None:
      fcntl.flock(self._f.fileno(), fcntl.LOCK_UN)
      self._f.close()
      self._f = None


def seed_config(config, seed: int):
  """The single-seed config of one seed of the runs axis (`config.seeds`)."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.seed, c.seeds = int(seed), ()
  return c


def finished_or_check(config, workdir: str) -> Optional[Dict]:
  """Checks that WORKDIR holds no other run (RunError if it does) and returns the stored
  summary if this run is already finished there."""
  placement.check(workdir, config.seeds or ())
  seed_dirs = [(os.path.join(workdir, f"seed{s}"), seed_config(config, s))
               for s in (config.seeds or ())]
  done = max([done_iterations(workdir)] + [done_iterations(d) for d, _ in seed_dirs])
  check_same_run(workdir, config.to_dict(), done)
  for d, c in seed_dirs:
    check_same_run(d, c.to_dict(), done)
  summary = finished_summary(workdir, config.num_global_iters)
  if summary is not None:
    logging.info("%s holds this run, finished at global iteration %d: nothing to do (summary: "
                 "%s)", workdir, config.num_global_iters, os.path.join(workdir, "summary.json"))
  return summary


def _share(status: int) -> int:
  """Process 0's decision, for every process of a multi-process run."""
  if jax.process_count() == 1:
    return status
  from jax.experimental import multihost_utils  # noqa: PLC0415
  return int(multihost_utils.broadcast_one_to_all(np.int32(status)))


def claim(config, workdir: str, overwrite: bool, lock: WorkdirLock) -> Optional[Dict]:
  """Process 0 takes the workdir lock, moves the old run aside with --overwrite, and checks
  the run again (another process may have written in between); every process of a
  multi-process run follows its decision. Returns the summary of a finished run."""
  primary = metrics_lib.is_primary()
  summary, error = None, None
  if primary:
    try:
      placement.check(workdir, config.seeds or ())
      lock.acquire()
      if overwrite:
        aside = move_aside(workdir)
        if aside:
          logging.warning("--overwrite: moved the previous run in %s to %s", workdir, aside)
      summary = finished_or_check(config, workdir)
    except RunError as e:
      error = e
  status = _share(2 if error is not None else 1 if summary is not None else 0)
  if status == 2:
    raise error if primary else RunError(
        f"process 0 refused the workdir {workdir} (see its error line)")
  if status == 1 and not primary:
    return dict(finished=True)
  return summary
