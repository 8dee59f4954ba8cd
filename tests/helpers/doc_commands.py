"""The fenced shell commands of README.md and docs/*.md, and how tests/test_docs.py runs them.

A command is one logical line of a ```bash block: continuation lines (ending in `\\`) joined,
a trailing `# comment` and repeated blanks dropped. `Run` says how the slow test runs one: the
same words, with its paths moved into a temporary folder, placeholders filled in, a data folder
swapped for tiny files in the real format, and short-run flags appended (a flag given twice:
the last one wins, for absl flags and ml_collections overrides alike)."""
import dataclasses
import glob
import os
import re
import shlex
import sys
from typing import Dict, List, Sequence, Tuple

import numpy as np

from helpers import real_files
from helpers.cli_runs import ROOT

# The short run of every command that trains: one global iteration of one local step.
SHORT = ("--config.num_global_iters=1", "--config.clients.local_iters=1")
# With the tiny dataset files below (80 training images): few clients, small batches.
TINY = SHORT + ("--config.clients.num=5", "--config.clients.participating=2",
                "--config.clients.batch_size=8", "--config.eval_batch_size=16",
                "--config.eval_examples=0", "--config.data.min_size=1")
# The &&-parts of the set-up command that make the environment (.ci/run does them).
SETUP_PARTS = ("python3 -m venv .venv", ". .venv/bin/activate", "pip install -r requirements.txt",
               "pip install -e .")
PATH_FLAGS = ("--workdir", "--out", "--trace")


@dataclasses.dataclass(frozen=True)
class Run:
  """How the slow test runs a documented command.

  extra: flags appended; subs: placeholder word -> value; data: "" or the tiny files that
  replace --config.data.dir ("cifar10" python batches, "fmnist" idx); after: a documented
  command run first in the same folder (it makes what this one reads); expect: files that must
  exist afterwards, relative to the temporary folder (a summary.json must record 1 iteration)."""
  extra: Tuple[str, ...] = SHORT
  subs: Tuple[Tuple[str, str], ...] = ()
  data: str = ""
  after: str = ""
  expect: Tuple[str, ...] = ()


def doc_files(root: str = ROOT) -> List[str]:
  return [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))


def commands_in(text: str) -> List[str]:
  """The commands of the ```bash blocks of a markdown text, in order."""
  out = []
  for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
    for line in re.sub(r"\\\n", " ", block).splitlines():
      line = re.sub(r"(^|\s)#.*$", "", line)
      line = " ".join(line.split())
      if line:
        out.append(line)
  return out


def documented(root: str = ROOT) -> Dict[str, List[str]]:
  """command -> the files (relative) that show it."""
  out: Dict[str, List[str]] = {}
  for path in doc_files(root):
    with open(path) as f:
      for command in commands_in(f.read()):
        out.setdefault(command, []).append(os.path.relpath(path, root))
  return out


def parts(command: str) -> List[str]:
  """The &&-parts that run something (the set-up parts dropped); an unknown part raises."""
  out = []
  for part in (p.strip() for p in command.split("&&")):
    if part in SETUP_PARTS:
      continue
    if not re.match(r"(python |launch/|benchmarks/)", part):
      raise ValueError(f"a part that is neither set-up nor a run: {part!r}")
    out.append(part)
  return out


def _moved(value: str, tmp: str) -> str:
  return os.path.normpath(os.path.join(tmp, value.lstrip("/")))


def argv(part: str, run: Run, tmp: str, data_dir: str = "") -> List[str]:
  """The argv of one part: placeholders filled, paths under `tmp`, data swapped, flags added."""
  words = shlex.split(part)
  subs = dict(run.subs)
  out = []
  for w in words:
    for key, value in subs.items():
      w = re.sub(rf"\b{key}\b", value, w)
    name, eq, value = w.partition("=")
    if eq and name in PATH_FLAGS:
      w = f"{name}={_moved(value, tmp)}"
    elif eq and name == "--config.data.dir" and data_dir:
      w = f"{name}={data_dir}"
    out.append(w)
  if out[0] == "python":
    out[0] = sys.executable
  elif out[0].endswith(".sh"):
    out.insert(0, "bash")
  return out + list(run.extra)


def write_data(kind: str, folder: str) -> str:
  """Tiny files in the real on-disk format of `kind` in `folder` (helpers.real_files)."""
  import pathlib  # noqa: PLC0415
  d = pathlib.Path(folder)
  d.mkdir(parents=True, exist_ok=True)
  if kind == "cifar10":
    (d / "cifar-10-batches-py").mkdir()
    x, y = real_files.images(0, 80), np.arange(80) % 10
    for i in range(5):
      real_files.write_cifar_py(d / "cifar-10-batches-py" / f"data_batch_{i + 1}",
                                x[16 * i:16 * i + 16], y[16 * i:16 * i + 16])
    real_files.write_cifar_py(d / "cifar-10-batches-py" / "test_batch", real_files.images(1, 20),
                              np.arange(20) % 10)
  elif kind == "fmnist":
    real_files.write_idx(d, real_files.images(2, 80, (28, 28)), np.arange(80) % 10,
                         real_files.images(3, 20, (28, 28)), np.arange(20) % 10, gz=True)
  else:
    raise ValueError(kind)
  return str(d)


def config_args(part: str, subs: Sequence[Tuple[str, str]] = ()) -> Tuple[str, List[str]]:
  """The --config=... value and the --config.x=v overrides of a part ("" if it has none)."""
  config, overrides = "", []
  for w in shlex.split(part):
    for key, value in subs:
      w = re.sub(rf"\b{key}\b", value, w)
    if w.startswith("--config="):
      config = w.split("=", 1)[1]
    elif w.startswith("--config."):
      overrides.append(w)
  return config, overrides


def load_config(config_arg: str, overrides: Sequence[str]):
  """The config `python -m gas_jax.main --config=config_arg OVERRIDES` would run."""
  from absl import flags  # noqa: PLC0415
  from ml_collections import config_flags  # noqa: PLC0415
  args = ["docs", f"--config={config_arg}", *overrides]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                  sys_argv=args)
  fv(args)
  return fv.config
