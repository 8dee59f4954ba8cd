"""Timing helpers shared by the benchmark scripts (no flags, importable from any of them)."""
import time

import jax
import jax.numpy as jnp


def best_seconds(fn, *args, reps: int = 5) -> float:
  """Best wall time of `reps` calls of fn(*args), after one untimed call (compilation)."""
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t)
  return best


def matmul_peak_gflops() -> float:
  """This machine's fp32 matmul rate (2048^2 on the CPU, 4096^2 elsewhere), best of 5."""
  n = 4096 if jax.default_backend() != "cpu" else 2048
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda a, b: jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST))
  return 2 * n ** 3 / best_seconds(f, a, a) / 1e9
