r"""Command line: `python -m gas_jax.main --config=configs/digits.py --workdir=DIR`.

Every config field can be overridden, e.g. `--config.clients.local_iters=20`.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from gas_jax import config as config_lib
from gas_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs and checkpoints.")
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


class _QuietLibraries:
  """Keeps INFO chatter of orbax/jax out of the run log (warnings still pass)."""

  def filter(self, record):
    path = record.pathname.replace("\\", "/")
    return record.levelno > 20 or not ("/orbax/" in path or "/jax/" in path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if _DISTRIBUTED.value:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    logging.info("process %d of %d, %d global devices", jax.process_index(), jax.process_count(),
                 jax.device_count())
  try:
    summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (config_lib.ConfigError, FileNotFoundError, FloatingPointError) as e:
    sys.exit(f"error: {e}")
  except ValueError as e:   # plugin lookups and data checks name their config field
    if "=" in str(e).split(" ")[0]:
      sys.exit(f"error: {e}")
    raise
  logging.info("summary: %s", summary)


if __name__ == "__main__":
  app.run(main)
