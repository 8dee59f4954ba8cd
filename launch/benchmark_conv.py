r"""Convolution formulations on this machine: XLA's native convolution against im2col (shifted
slices + one matmul, `gas_jax.models.layers.conv2d`), forward + both gradients, as a fraction of
the machine's fp32 matmul peak measured in the same run. This is how `layers.conv_impl()` was
chosen per backend ("im2col" on the CPU).

    python launch/benchmark_conv.py --out=/tmp/conv.json

Shapes: the 3x3 convolutions of cnn_small (digits) and AlexNet L2 (CIFAR-10) at a client
minibatch (32 rows) and at a server update (320 real + 128 generated rows).
"""
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gas_jax.models import layers  # noqa: E402
from timing import best_seconds, matmul_peak_gflops  # noqa: E402  (launch/timing.py)

_OUT = flags.DEFINE_string("out", None, "Output JSON file.")

SHAPES = (   # (name, batch, spatial, cin, cout)
    ("cnn_small conv2 (client)", 32, 8, 32, 64),
    ("cnn_small conv3 (server update)", 448, 4, 64, 128),
    ("alexnet conv2 (client)", 32, 16, 32, 64),
    ("alexnet conv7 (server update)", 448, 8, 64, 128),
    ("alexnet conv8 (server update)", 448, 8, 128, 256),
    ("alexnet conv9 (server update)", 448, 8, 256, 256),
)


def main(argv):
  del argv
  peak = matmul_peak_gflops()
  rows = []
  for name, b, hw, cin, cout in SHAPES:
    x = jax.random.normal(jax.random.key(1), (b, hw, hw, cin))
    k = jax.random.normal(jax.random.key(2), (3, 3, cin, cout)) * 0.05
    flops = 3 * 2 * b * hw * hw * 9 * cin * cout      # forward + input and kernel gradients
    row = dict(layer=name, gflop=flops / 1e9)
    for impl in ("xla", "im2col"):
      step = jax.jit(jax.grad(lambda x, k, impl=impl: jnp.sum(jnp.square(
          layers.conv2d(x, k, impl=impl))), argnums=(0, 1)))
      t = best_seconds(step, x, k)
      row[f"{impl}_ms"] = t * 1e3
      row[f"{impl}_peak_fraction"] = flops / t / (peak * 1e9)
    rows.append(row)
    print(json.dumps(row))
  out = dict(device=f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}",
             matmul_peak_gflops=peak, layers=rows, date=time.strftime("%Y-%m-%d"))
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
  app.run(main)
