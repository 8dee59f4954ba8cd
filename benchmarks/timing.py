r"""Timing helpers shared by the benchmarks, and the `matmul_peak` benchmark: this machine's
matmul rates, fp32 (`HIGHEST` precision) and at the backend's default precision (TF32 on recent
NVIDIA GPUs, which the models' convolutions and matmuls use).

    python -m benchmarks.run matmul_peak --out=/tmp/peak.json [--peak_size=2048]
"""
import time

import jax
import jax.numpy as jnp

from benchmarks import common


def best_seconds(fn, *args, reps: int = 5) -> float:
  """Best wall time of `reps` calls of fn(*args), after one untimed call (compilation)."""
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t)
  return best


def peak_size(n: int = 0) -> int:
  """The side of the peak's square matmuls: n, or 0 for 2048 on the CPU, 4096 elsewhere."""
  return n or (4096 if jax.default_backend() != "cpu" else 2048)


def matmul_peak_gflops(n: int = 0) -> float:
  """This machine's fp32 matmul rate (n x n, `peak_size`), best of 5."""
  n = peak_size(n)
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda a, b: jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST))
  return 2 * n ** 3 / best_seconds(f, a, a) / 1e9


def bf16_matmul_peak_gflops(n: int = 0) -> float:
  """This machine's bfloat16 matmul rate with float32 accumulation (n x n), best of 5: the
  ceiling of `execution.precision=bf16` (on CPUs with AMX-BF16 several times the fp32 one)."""
  n = peak_size(n)
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(jnp.bfloat16)
  f = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
  return 2 * n ** 3 / best_seconds(f, a, a) / 1e9


def default_precision_peak_gflops(n: int = 0) -> float:
  """The matmul rate at the backend's default precision (n x n, `peak_size`), best of 5."""
  n = peak_size(n)
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  return 2 * n ** 3 / best_seconds(jax.jit(jnp.matmul), a, a) / 1e9


def define_flags(fv, argv):
  """This benchmark's flags, in `fv` (`common.parse_flags`)."""
  del argv
  common.define_out(fv)
  common.define_peak_size(fv)


def main(argv) -> dict:
  """Writes JSON: device, matmul_size, matmul_peak_gflops, matmul_default_precision_gflops,
  matmul_bf16_peak_gflops."""
  fv = common.parse_flags(define_flags, argv)
  n = fv.peak_size
  out = dict(device=common.device_name(), matmul_size=peak_size(n),
             matmul_peak_gflops=matmul_peak_gflops(n),
             matmul_default_precision_gflops=default_precision_peak_gflops(n),
             matmul_bf16_peak_gflops=bf16_matmul_peak_gflops(n),
             date=time.strftime("%Y-%m-%d"))
  return common.write_json(out, fv.out)
