r"""The statistics' compression on this machine: a plain QR of the whole square-root factor
(`jnp.linalg.qr(mode="r")`, the first compression of a label) against the triangular-pentagonal
QR of [R; P] (`gas_jax.linalg.tpqr_r`, every later one), each as seconds, useful GFLOP/s and a
fraction of the fp32 matmul peak measured in the same run.

    python launch/benchmark_qr.py --config=configs/cifar10.py --out=/tmp/qr.json

Shapes: the config's activation dimension D and factor capacity (`stats.sqrt_capacity`), i.e.
R is D x D and P has capacity - D rows, as `stats.make_room` sees them. Flops counted are the
necessary ones: 2 n D^2 - 2 D^3 / 3 for the QR of n = capacity rows, 2 (capacity - D) D^2 for
eliminating P against R.
"""
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gas_jax import linalg, stats  # noqa: E402
from gas_jax import config as config_lib  # noqa: E402
from gas_jax.data import real  # noqa: E402
from gas_jax import train  # noqa: E402,F401  (registers the models)
from gas_jax.models.registry import get_model  # noqa: E402
from timing import best_seconds, matmul_peak_gflops  # noqa: E402  (launch/timing.py)

_CONFIG = config_flags.DEFINE_config_file("config", "configs/cifar10.py", "Experiment config.")
_OUT = flags.DEFINE_string("out", None, "Output JSON file.")
_REPS = flags.DEFINE_integer("reps", 3, "Timed repetitions (the best is kept).")


def main(argv):
  del argv
  config = _CONFIG.value
  config_lib.validate(config)
  peak = matmul_peak_gflops()
  spec = real.SPECS.get(config.data.name)
  shape, m = (spec.shape, spec.num_classes) if spec else ((8, 8, 1), 10)      # digits
  d = int(np.prod(get_model(config.model.name, config.model.split, m, shape).activation_shape))
  rows = config.clients.participating * config.clients.batch_size
  cap = stats.sqrt_capacity(d, rows, m, config.stats.block)
  rng = np.random.default_rng(0)
  g = rng.normal(size=(cap, d)).astype(np.float32)
  r = jnp.asarray(np.linalg.qr(g[:d], mode="r"), jnp.float32)
  p = jnp.asarray(g[d:])
  qr = jax.jit(lambda g: jnp.linalg.qr(g, mode="r"))
  t_qr = best_seconds(qr, jnp.asarray(g), reps=_REPS.value)
  t_tp = best_seconds(jax.jit(linalg.tpqr_r), r, p, reps=_REPS.value)
  f_qr = 2 * cap * d ** 2 - 2 * d ** 3 / 3
  f_tp = 2 * (cap - d) * d ** 2
  out = dict(device=f"{jax.default_backend()}:{jax.devices()[0].device_kind}",
             config=config.data.name, model=f"{config.model.name}/{config.model.split}",
             dim=d, capacity=cap, matmul_peak_gflops=peak,
             qr_s=t_qr, qr_gflops=f_qr / t_qr / 1e9, qr_peak_fraction=f_qr / t_qr / 1e9 / peak,
             tpqr_s=t_tp, tpqr_gflops=f_tp / t_tp / 1e9,
             tpqr_peak_fraction=f_tp / t_tp / 1e9 / peak, tpqr_over_qr=t_tp / t_qr,
             date=time.strftime("%Y-%m-%d"))
  text = json.dumps(out, indent=2)
  print(text)
  if _OUT.value:
    tmp = _OUT.value + ".tmp"
    with open(tmp, "w") as f:
      f.write(text + "\n")
    os.replace(tmp, _OUT.value)


if __name__ == "__main__":
  app.run(main)
