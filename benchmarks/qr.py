r"""The statistics' compression on this machine: a plain QR of the whole square-root factor
(`jnp.linalg.qr(mode="r")`, the first compression of a label) against the triangular-pentagonal
QR of [R; P] (`gas_jax.stats.linalg.tpqr_r`, every later one), each as seconds, useful GFLOP/s
and a fraction of the fp32 matmul peak measured in the same run.

    python -m benchmarks.run qr --config=configs/cifar10.py --out=/tmp/qr.json

Shapes: the config's activation dimension D and factor capacity (`stats.sqrt_capacity`), i.e.
R is D x D and P has capacity - D rows, as `stats.make_room` sees them. Flops counted are the
necessary ones: 2 n D^2 - 2 D^3 / 3 for the QR of n = capacity rows, 2 (capacity - D) D^2 for
eliminating P against R. `--small` caps D at 64 (a quick check that the benchmark runs, not a
measurement).
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from benchmarks import common
from benchmarks.timing import best_seconds, matmul_peak_gflops
from gas_jax import config as config_lib
from gas_jax import stats
from gas_jax.data import real
from gas_jax.models.registry import get_model
from gas_jax.stats import linalg


def define_flags(fv, argv):
  """This benchmark's flags, in `fv` (`common.parse_flags`)."""
  common.define_config(fv, argv, default="configs/cifar10.py")
  common.define_out(fv)
  common.define_peak_size(fv)
  flags.DEFINE_integer("reps", 3, "Timed repetitions (the best is kept).", flag_values=fv)
  flags.DEFINE_bool("small", False, "Cap the dimension D at 64 (a quick check).",
                    flag_values=fv)


def main(argv) -> dict:
  fv = common.parse_flags(define_flags, argv)
  config = fv.config
  config_lib.validate(config)
  peak = matmul_peak_gflops(fv.peak_size)
  spec = real.SPECS.get(config.data.name)
  shape, m = (spec.shape, spec.num_classes) if spec else ((8, 8, 1), 10)      # digits
  d = int(np.prod(get_model(config.model.name, config.model.split, m, shape).activation_shape))
  if fv.small:
    d = min(d, 64)
  rows = config.clients.participating * config.clients.batch_size
  cap = stats.sqrt_capacity(d, rows, m, config.stats.block)
  rng = np.random.default_rng(0)
  g = rng.normal(size=(cap, d)).astype(np.float32)
  r = jnp.asarray(np.linalg.qr(g[:d], mode="r"), jnp.float32)
  p = jnp.asarray(g[d:])
  qr = jax.jit(lambda g: jnp.linalg.qr(g, mode="r"))
  t_qr = best_seconds(qr, jnp.asarray(g), reps=fv.reps)
  t_tp = best_seconds(jax.jit(linalg.tpqr_r), r, p, reps=fv.reps)
  f_qr = 2 * cap * d ** 2 - 2 * d ** 3 / 3
  f_tp = 2 * (cap - d) * d ** 2
  out = dict(device=common.device_name(),
             config=config.data.name, model=f"{config.model.name}/{config.model.split}",
             dim=d, capacity=cap, matmul_peak_gflops=peak,
             qr_s=t_qr, qr_gflops=f_qr / t_qr / 1e9, qr_peak_fraction=f_qr / t_qr / 1e9 / peak,
             tpqr_s=t_tp, tpqr_gflops=f_tp / t_tp / 1e9,
             tpqr_peak_fraction=f_tp / t_tp / 1e9 / peak, tpqr_over_qr=t_tp / t_qr,
             date=time.strftime("%Y-%m-%d"))
  return common.write_json(out, fv.out)
