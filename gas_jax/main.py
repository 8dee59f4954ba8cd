r"""Command line: `python -m gas_jax.main --config=configs/digits.py --workdir=DIR`.

Every config field can be overridden, e.g. `--config.clients.local_iters=20`. A bad flag, config
file or value, a workdir holding another run or in use, or a full disk ends the program with one
line, `error: ...`, before anything is written (or, for a full disk, saying how to resume).
"""
import errno
import os
import sys

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from gas_jax import errors

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs and checkpoints.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Start over in a workdir that holds another run: the old run is moved to "
    "WORKDIR.replaced-<time> (never deleted).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first (multi-host: Cloud TPU pods, "
    "SLURM, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID in the environment).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "With --distributed: host:port of process 0's coordinator "
    "(default: detected, or JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "With --distributed: number of processes (default: detected).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "With --distributed: this process's index (default: detected).")
flags.mark_flags_as_required(["config", "workdir"])

_NO_SPACE = ("No space left on device", "Errno 28", "ENOSPC")


class _QuietLibraries:
  """Keeps INFO chatter of orbax/jax out of the run log (warnings still pass)."""

  def filter(self, record):
    path = record.pathname.replace("\\", "/")
    return record.levelno > 20 or not ("/orbax/" in path or "/jax/" in path)


def _one_line(text: str) -> str:
  return " ".join(str(text).split())


def _flag_error(e: BaseException, argv) -> str:
  """One line for a flag that could not be parsed (unknown config key, bad config file...)."""
  text = str(e).strip().strip("'\"")
  if isinstance(e, (AttributeError, KeyError)):   # an override of a field the config lacks
    lines = [ln.strip().strip("'\"\\") for ln in text.replace("\\n", "\n").splitlines()]
    key = lines[0].strip("'\"\\") if lines else "?"
    arg = next((a.split("=")[0] for a in argv[1:] if a.startswith("--config.")
                and a.split("=")[0].split(".")[-1] == key), f"--config.{key}")
    hint = next((ln for ln in lines[1:] if ln.lower().startswith("did you mean")), "")
    return f"{arg}: the config has no field {key!r}" + (f"; {hint}" if hint else "")
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  head = lines[0] if lines else type(e).__name__
  if head.startswith("flag "):
    head = head[5:]
  flag = head.split(": ")[0]
  last = lines[-1] if lines else ""
  for marker in ("ConfigError: ", "Error: "):
    if marker in last:
      return f"{flag}: {last.split(marker, 1)[1]}"
  return _one_line(head)


def _config_file_error(value, argv) -> str:
  """One line for a config file that could not be loaded (missing, or a broken module)."""
  try:
    value.seed   # pylint: disable=pointless-statement
  except Exception as e:  # pylint: disable=broad-except
    text = str(e)
  else:
    text = "not a config"
  arg = next((a for a in argv[1:] if a.startswith("--config=")), "--config")
  path = arg.split("=", 1)[-1].split(":")[0]
  if "No such file" in text or "Errno 2" in text:
    where = ("" if os.path.isabs(path) else
             f" (a relative path is taken from the current directory, {os.getcwd()})")
    return f"{arg}: no such config file {path!r}{where}"
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  return f"{arg}: could not load the config file: {lines[-1] if lines else text}"


def parse_flags(argv):
  """absl's flag parsing, with one line instead of a traceback for a bad flag or config."""
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {_flag_error(e, argv)}")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    sys.exit(f"error: {_flag_error(e, argv)}")
  if _CONFIG.value is not None and not isinstance(_CONFIG.value, ml_collections.ConfigDict):
    sys.exit(f"error: {_config_file_error(_CONFIG.value, argv)}")
  return rest


def _no_space(e: BaseException) -> bool:
  return (isinstance(e, OSError) and e.errno == errno.ENOSPC) or any(
      m in str(e) for m in _NO_SPACE)


def boundary_message(e: BaseException, workdir: str):
  """The one line for an exception that reaches the program's boundary, or None (a bug: let
  the traceback show)."""
  if _no_space(e):
    return (f"no space left on the device holding {os.path.abspath(workdir)} "
            f"({type(e).__name__}); nothing is lost: free some space, then rerun the same command "
            "to resume from the last checkpoint")
  if isinstance(e, (errors.ConfigError, errors.RunError, errors.DataError, FileNotFoundError,
                    FloatingPointError)):
    return _one_line(e)   # each names its config field, file or global iteration
  if isinstance(e, PermissionError):
    return f"permission denied: {e.filename}"
  return None


def run(config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False):
  """`train.train_and_evaluate` with the program's error boundary: a bad input, a refused
  workdir or a full disk exit with one line (`SystemExit("error: ...")`)."""
  from gas_jax import train  # noqa: PLC0415  (flag errors exit before jax is imported)
  try:
    return train.train_and_evaluate(config, workdir, overwrite)
  except Exception as e:  # pylint: disable=broad-except
    message = boundary_message(e, workdir)
    if message is None:
      raise
    sys.exit(f"error: {message}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  from gas_jax import execution  # noqa: PLC0415  (imports jax: after the flags are checked)
  # Before anything starts XLA's CPU runtime (jax.distributed below), whose threads follow it.
  execution.limit_cpu_threads(_CONFIG.value.execution.get("cpu_threads", 0))
  if _DISTRIBUTED.value:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    logging.info("process %d of %d, %d global devices", jax.process_index(), jax.process_count(),
                 jax.device_count())
  summary = run(_CONFIG.value, _WORKDIR.value, _OVERWRITE.value)
  logging.info("summary: %s", summary)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
