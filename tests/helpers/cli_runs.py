"""Running `python -m gas_jax.main` from tests: the command, a finished run, its rows, and the
short digits config of the bad-input tests (shared by the tests; not a test module)."""
import hashlib
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def short_digits_config(**overrides):
  """configs/digits.py, one short global iteration, with dotted-key overrides ('a__b' = a.b)."""
  from configs import digits  # noqa: PLC0415
  c = digits.get_config()
  c.num_global_iters = 1
  c.clients.local_iters = 1
  for key, value in overrides.items():
    node, parts = c, key.split("__")
    for p in parts[:-1]:
      node = node[p]
    with c.unlocked():
      node[parts[-1]] = value
  return c


def main_cmd(workdir, args, *extra):
  """The command line of one run in `workdir` with the flags `args` and then `extra`."""
  return [sys.executable, "-m", "gas_jax.main", f"--workdir={workdir}", *args, *extra]


def run_main(workdir, args, *extra, timeout=900):
  """Runs it to the end from the repository root; the CompletedProcess (text stdout/stderr)."""
  return subprocess.run(main_cmd(workdir, args, *extra), cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout)


def rows(workdir):
  """metrics.jsonl without the wall-clock column (the numbers two equal runs share)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    out = [json.loads(line) for line in f]
  for r in out:
    r.pop("wall_time_s")
  return out


def digest(folder):
  """sha256 of every file below `folder` but the workdir lock (to show files untouched)."""
  out = {}
  for root, _, files in os.walk(folder):
    for name in files:
      if name != ".lock":
        path = os.path.join(root, name)
        with open(path, "rb") as f:
          out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
  return out
