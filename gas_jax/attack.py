r"""Command line of the model-inversion attack on a trained split run (`gas_jax.privacy.attack`):

    python -m gas_jax.attack --workdir=RUN [--aux=N --targets=N --epochs=E --batch_size=B
                                            --blocks=N --channels=C --seed=S]

Writes RUN/attack.json (MSE, PSNR, SSIM of the reconstructed training images, with the
mean-image baseline and the settings) and RUN/reconstructions.png. A run it cannot attack (an FL
baseline, no checkpoint, a multi-seed workdir, a run still training: the attack takes RUN's
workdir lock), a flag that does not parse or is out of range end the program with one line,
`error: ...`, naming the flag.
"""
import sys

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "The run to attack (a single seed's folder).")
_AUX = flags.DEFINE_integer("aux", 0, "Auxiliary (activation, image) pairs from the test split "
                            "to train the decoder on; 0 = the whole test split.")
_TARGETS = flags.DEFINE_integer("targets", 100, "Training images reconstructed and scored.")
_EPOCHS = flags.DEFINE_integer("epochs", 50, "Decoder training epochs over the auxiliary pairs.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Decoder training batch size.")
_BLOCKS = flags.DEFINE_integer("blocks", 4, "Residual blocks N of the decoder res_normN{N}C{C}.")
_CHANNELS = flags.DEFINE_integer("channels", 64, "Channels C of the decoder res_normN{N}C{C}.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the auxiliary/target draws and the decoder.")
flags.mark_flags_as_required(["workdir"])


def parse_flags(argv):
  """absl's flag parsing, with one line instead of usage text for a bad or missing flag."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit("error: " + " ".join(str(e).split()))


class _QuietLibraries:
  """Keeps INFO chatter of orbax/jax out of the log, as `gas_jax.main` does."""

  def filter(self, record):
    path = record.pathname.replace("\\", "/")
    return record.levelno > 20 or not ("/orbax/" in path or "/jax/" in path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  from gas_jax import errors  # noqa: PLC0415  (jax is imported after the flags are parsed)
  from gas_jax.privacy import attack  # noqa: PLC0415
  settings = attack.AttackSettings(aux=_AUX.value, targets=_TARGETS.value, epochs=_EPOCHS.value,
                                   batch_size=_BATCH.value, blocks=_BLOCKS.value,
                                   channels=_CHANNELS.value, seed=_SEED.value)
  try:
    if not _WORKDIR.value.strip():
      raise errors.ConfigError("--workdir='': give the folder of the run to attack")
    result = attack.run_attack(_WORKDIR.value, settings)
  except (errors.ConfigError, errors.RunError, errors.DataError, FileNotFoundError) as e:
    sys.exit("error: " + " ".join(str(e).split()))
  print(f"mse {result['mse']:.5f}  psnr {result['psnr']:.2f} dB  ssim {result['ssim']:.4f}  "
        f"(mean-image guess: mse {result['baseline']['mse']:.5f}, psnr "
        f"{result['baseline']['psnr']:.2f}, ssim {result['baseline']['ssim']:.4f})")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
