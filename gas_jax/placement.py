"""Where a workdir may be: never inside another run, never around one, never a system folder.

A run owns its workdir: orbax's checkpoint rotation deletes old step folders of
WORKDIR/checkpoints, `--overwrite` moves everything in WORKDIR aside, and a resume rewrites
config.json, metrics.jsonl and summary.json. So a second run placed inside the first one (e.g.
`--workdir=host/checkpoints/2`) is silently deleted by the host's next rotation, and a run placed
around others mixes with them. `check(workdir, seeds)` refuses, in one line (`RunError`), before
anything is written:

- **a system folder**: `/` and the standard top-level folders (`SYSTEM_FOLDERS`, also reached
  through a symlink), the user's home folder itself, and anything inside the operating system's
  own trees (`SYSTEM_TREES`: /proc, /sys, /dev but /dev/shm, /boot, /etc, /bin, /sbin, /lib*,
  /usr). Folders such as /tmp/x, /var/tmp/x, /dev/shm/x, /home/user/runs/x stay allowed;
- **inside a run**: any ancestor folder holding a run's config.json (`is_run_folder`), its
  `checkpoints/` included. The one exception is a lane of a multi-seed run, WORKDIR/seed<s> of a
  run whose `seeds` list s (it continues alone as a single run, README "Multi-seed runs");
- **around a run**: a run below the workdir, found by a bounded breadth-first walk
  (`MAX_DEPTH` levels, `MAX_FOLDERS` folders, symlinks not followed), except the workdir's own
  lanes WORKDIR/seed<s> for s in the new or the stored config's `seeds`.

The launchers' layouts pass: compare and campaign put their runs in
ROOT/<partition>/<method>/seed<k> under a root that holds no run, launch/privacy.py in
ROOT/<split>/<defence>/seed<k>.
"""
import collections
import json
import os
from typing import Iterable, Optional

from gas_jax.errors import RunError

CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"
# Exactly these folders (and the user's home folder) are refused as a workdir.
SYSTEM_FOLDERS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
    "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr",
    "/var", "/Users", "/System", "/Library", "/Applications", "/Volumes", "/private"})
# Nothing inside these is a workdir (the operating system's files, devices, kernel views).
SYSTEM_TREES = ("/proc", "/sys", "/dev", "/boot", "/etc", "/bin", "/sbin", "/lib", "/lib32",
                "/lib64", "/libx32", "/usr")
ALLOWED_IN_TREES = ("/dev/shm",)     # a RAM disk: a fine place for a short run
MAX_DEPTH = 6        # campaign: DIR/runs/<config>/<partition>/<method>/seed<k> is 5 levels
MAX_FOLDERS = 20000


def is_run_folder(folder: str) -> bool:
  """Whether `folder` holds a gas-jax run: a config.json naming `algorithm` and
  `num_global_iters`, or an unreadable config.json beside a checkpoints/ folder."""
  path = os.path.join(folder, CONFIG_FILE)
  if not os.path.isfile(path):
    return False
  try:
    with open(path) as f:
      d = json.load(f)
  except (OSError, ValueError):
    return os.path.isdir(os.path.join(folder, CHECKPOINTS))
  return isinstance(d, dict) and "algorithm" in d and "num_global_iters" in d


def _stored_seeds(folder: str) -> set:
  try:
    with open(os.path.join(folder, CONFIG_FILE)) as f:
      seeds = json.load(f).get("seeds") or ()
    return {int(s) for s in seeds}
  except (OSError, ValueError, TypeError, AttributeError):
    return set()


def _lane_seed(folder: str) -> Optional[int]:
  """s for a folder named seed<s>, else None."""
  name = os.path.basename(folder)
  digits = name[4:]
  return int(digits) if name.startswith("seed") and digits.isdigit() else None


def _system_reason(path: str) -> Optional[str]:
  home = os.path.expanduser("~")
  if path in SYSTEM_FOLDERS or (home not in ("", "/") and path == os.path.abspath(home)):
    return f"{path} is a system folder"
  for tree in SYSTEM_TREES:
    if path.startswith(tree + os.sep) and not any(
        path == a or path.startswith(a + os.sep) for a in ALLOWED_IN_TREES):
      return f"{path} is inside the system folder {tree}"
  return None


def _host_run(path: str) -> Optional[str]:
  """The nearest ancestor of `path` holding a run that `path` is not a lane of, or None."""
  child, parent = path, os.path.dirname(path)
  while parent != child:
    if is_run_folder(parent):
      seed = _lane_seed(child)
      if not (child == path and seed is not None and seed in _stored_seeds(parent)):
        return parent
    child, parent = parent, os.path.dirname(parent)
  return None


def run_below(workdir: str, lanes: Iterable[int] = ()) -> Optional[str]:
  """The first folder below `workdir` (breadth first, bounded) holding a run, other than the
  lanes WORKDIR/seed<s> for s in `lanes`; None if there is none."""
  allowed = {os.path.join(workdir, f"seed{int(s)}") for s in lanes}
  queue = collections.deque([(workdir, 0)])
  seen = 0
  while queue and seen < MAX_FOLDERS:
    folder, depth = queue.popleft()
    try:
      entries = sorted((e for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)),
                       key=lambda e: e.name)
    except OSError:
      continue
    for e in entries:
      seen += 1
      if e.path not in allowed and is_run_folder(e.path):
        return e.path
      if depth + 1 < MAX_DEPTH:
        queue.append((e.path, depth + 1))
  return None


def _paths(workdir: str):
  path = os.path.abspath(workdir)
  return path, list(dict.fromkeys((path, os.path.realpath(path))))


def check_system(workdir: str) -> None:
  """Raises RunError (one line) if `workdir` is a system folder or inside one (it reads the
  path only; `config.validate` calls it before probing that the folder is writable)."""
  for p in _paths(workdir)[1]:
    reason = _system_reason(p)
    if reason:
      raise RunError(f"--workdir={workdir}: {reason}; a run writes config.json, metrics and "
                     "checkpoints into its workdir and --overwrite moves everything there "
                     "aside: give a folder of its own, e.g. --workdir=runs/x")


def check(workdir: str, seeds: Iterable[int] = ()) -> None:
  """Raises RunError (one line) if `workdir` may not hold a run (see the module docstring).
  `seeds`: the new config's runs axis (its lanes WORKDIR/seed<s> belong to it)."""
  check_system(workdir)
  path, paths = _paths(workdir)
  for p in paths:
    host = _host_run(p)
    if host:
      inside = os.path.relpath(p, host)
      where = (f"in its {CHECKPOINTS}/ folder, whose rotation deletes old step folders"
               if inside.split(os.sep)[0] == CHECKPOINTS else
               "where its --overwrite would move this run aside with its own")
      raise RunError(f"--workdir={workdir} is inside the run in {host} ({where}); nothing was "
                     "changed: give a folder outside every run")
  if os.path.isdir(path):
    nested = run_below(path, set(int(s) for s in seeds) | _stored_seeds(path))
    if nested:
      raise RunError(f"--workdir={workdir} contains the run in {nested}: a run's workdir may "
                     "not hold another run (its checkpoint rotation, resume and --overwrite "
                     "act on the whole folder); nothing was changed: give a folder of its own")
