"""The benchmarks' entry point: `python -m benchmarks.run NAME [flags]` (see `benchmarks`).

`main(argv)` runs benchmark NAME = argv[1] with the flags argv[2:] in this process and returns
its result (the dict it writes as JSON); each benchmark parses its own flags, so several can
run one after another in one process.
"""
import importlib
import sys

from absl import flags
from absl import logging

BENCHMARKS = {      # name -> module of `benchmarks` (its main(argv) runs it)
    "iteration": "iteration",
    "seeds": "seeds",
    "parts": "parts",
    "conv": "conv",
    "qr": "qr",
    "matmul_peak": "timing",
}


def usage() -> str:
  return ("usage: python -m benchmarks.run NAME [flags]   (NAME --help: its flags)\n"
          "NAME: " + ", ".join(BENCHMARKS))


def main(argv) -> dict:
  if len(argv) < 2 or argv[1] not in BENCHMARKS:
    got = f"unknown benchmark {argv[1]!r}\n" if len(argv) > 1 and argv[1] not in (
        "-h", "--help") else ""
    raise SystemExit(got + usage())
  name = argv[1]
  module = importlib.import_module(f"benchmarks.{BENCHMARKS[name]}")
  return module.main([f"benchmarks.run {name}"] + list(argv[2:]))


if __name__ == "__main__":
  flags.FLAGS(sys.argv[:1])          # absl's own flags at their defaults (logging)
  logging.set_verbosity(logging.INFO)
  try:
    main(sys.argv)
  except flags.Error as e:
    raise SystemExit(f"{e}\n{usage()}") from None
