r"""Convolution formulations on this machine: XLA's native convolution against im2col (shifted
slices + one matmul, `gas_jax.models.layers.conv2d`), forward + both gradients, as a fraction of
the machine's fp32 matmul peak measured in the same run. This is how the execution plan's
convolutions (`execution.conv_impl`, `layers.conv_impl()`) were chosen per backend ("im2col" on
the CPU).

    python -m benchmarks.run conv --out=/tmp/conv.json

Shapes: the 3x3 convolutions of cnn_small (digits) and AlexNet L2 (CIFAR-10) at a client
minibatch (32 rows) and at a server update (320 real + 128 generated rows). `--small` keeps
the first shape only at 8 rows (a quick check that the benchmark runs, not a measurement).
"""
import json
import time

import jax
import jax.numpy as jnp
from absl import flags

from benchmarks import common
from benchmarks.timing import best_seconds, matmul_peak_gflops
from gas_jax.models import layers

SHAPES = (   # (name, batch, spatial, cin, cout)
    ("cnn_small conv2 (client)", 32, 8, 32, 64),
    ("cnn_small conv3 (server update)", 448, 4, 64, 128),
    ("alexnet conv2 (client)", 32, 16, 32, 64),
    ("alexnet conv7 (server update)", 448, 8, 64, 128),
    ("alexnet conv8 (server update)", 448, 8, 128, 256),
    ("alexnet conv9 (server update)", 448, 8, 256, 256),
)


def define_flags(fv, argv):
  """This benchmark's flags, in `fv` (`common.parse_flags`)."""
  del argv
  common.define_out(fv)
  common.define_peak_size(fv)
  flags.DEFINE_bool("small", False, "Only the first shape, at 8 rows (a quick check).",
                    flag_values=fv)
  flags.DEFINE_integer("reps", 5, "Timed repetitions (the best is kept).", flag_values=fv)


def main(argv) -> dict:
  """Writes JSON: device, matmul_peak_gflops, layers (per shape: layer, gflop, and per
  formulation xla/im2col: <impl>_ms and <impl>_peak_fraction), date."""
  fv = common.parse_flags(define_flags, argv)
  peak = matmul_peak_gflops(fv.peak_size)
  shapes = ((SHAPES[0][0], 8) + SHAPES[0][2:],) if fv.small else SHAPES
  rows = []
  for name, b, hw, cin, cout in shapes:
    x = jax.random.normal(jax.random.key(1), (b, hw, hw, cin))
    k = jax.random.normal(jax.random.key(2), (3, 3, cin, cout)) * 0.05
    flops = 3 * 2 * b * hw * hw * 9 * cin * cout      # forward + input and kernel gradients
    row = dict(layer=name, gflop=flops / 1e9)
    for impl in ("xla", "im2col"):
      step = jax.jit(jax.grad(lambda x, k, impl=impl: jnp.sum(jnp.square(
          layers.conv2d(x, k, impl=impl))), argnums=(0, 1)))
      t = best_seconds(step, x, k, reps=fv.reps)
      row[f"{impl}_ms"] = t * 1e3
      row[f"{impl}_peak_fraction"] = flops / t / (peak * 1e9)
    rows.append(row)
    print(json.dumps(row))
  out = dict(device=common.device_name(), matmul_peak_gflops=peak, layers=rows,
             date=time.strftime("%Y-%m-%d"))
  return common.write_json(out, fv.out)
