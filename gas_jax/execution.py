"""How a run executes: every backend-dependent automatic choice, made in one place.

`ExecutionPlan.resolve(config, backend)` turns the `execution.*` fields (-1 / "" = "the fastest
for the backend") into concrete values. The run logs the plan at start and writes it into
config.json (key `execution_plan`), so a run says how it ran. None of these choices changes the
numbers beyond float32 rounding (tests/runners/test_equivalence.py, tests/run/test_multiseed.py);
they change the speed. Tests build a plan directly (`ExecutionPlan(...)`) instead of depending on
the machine they run on (like fedjax's `for_each_client` backends).

| field | choices | automatic (CPU / GPU / TPU) |
|---|---|---|
| `cohort_size` | 1 event by event, 0 unbounded cohorts, N | 1 / 0 / 0 |
| `server_chunk` | 0 one pass, N rows per chunk | 32 / 0 / 0 |
| `vmap_seeds` | the runs axis vmapped, or a host loop | loop / vmapped / vmapped |
| `conv_impl` | convolutions of single steps, server and evaluation: `im2col` or `xla` | im2col / xla / xla |
| `cohort_conv_impl` | convolutions of vmapped cohort steps | im2col / im2col / xla |
| `sampler` | square-root statistics sampler: `loop` or `batched` | loop / batched / batched |
| `devices` | devices of the cohort mesh | all devices (`jax.device_count()`) |
| `cpu_threads` | CPU cores this process may use (XLA's CPU thread pool follows them) | all it may use |

Why these defaults (figures in docs/benchmarks.md): on the CPU vmapped convolutions are slower
than a loop of single ones, XLA's native convolution reaches under half the matmul rate on these
small images, and smaller server chunks stay in cache; on accelerators the opposite holds.
CPU threads: XLA's CPU runtime slows down far more than the share of cores when processes
share a machine, so `launch/compare.py --jobs=N` gives each job its own cores.
"""
import contextlib
import dataclasses
import os
from typing import Dict, Optional

import jax
from absl import logging

from gas_jax.models import layers

CONV_IMPLS = ("im2col", "xla")
SAMPLERS = ("loop", "batched")


def available_cores() -> int:
  """CPU cores this process may run on (its affinity mask)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:   # not Linux
    return os.cpu_count() or 1


def limit_cpu_threads(n: int) -> int:
  """Restricts this process to its first n allowed cores (XLA's CPU thread pool follows the
  affinity mask when the backend starts); returns the cores it may use. n <= 0: unchanged."""
  try:
    cores = sorted(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1
  if 0 < n < len(cores):
    os.sched_setaffinity(0, cores[:n])
    return n
  return len(cores)


def core_slots(jobs: int, cores=None):
  """The cores of each of `jobs` concurrent processes: the allowed cores split into contiguous
  groups (with more jobs than cores, jobs share cores round-robin)."""
  if cores is None:
    try:
      cores = sorted(os.sched_getaffinity(0))
    except AttributeError:
      cores = list(range(os.cpu_count() or 1))
  cores, jobs = list(cores), max(1, jobs)
  if jobs >= len(cores):
    return [[cores[j % len(cores)]] for j in range(jobs)]
  return [cores[j * len(cores) // jobs:(j + 1) * len(cores) // jobs] for j in range(jobs)]


@dataclasses.dataclass(frozen=True)
class ExecutionPlan:
  """The resolved execution choices of one run (see the module docstring)."""
  backend: str = "cpu"
  cohort_size: int = 1
  server_chunk: int = 32
  vmap_seeds: bool = False
  conv_impl: str = "im2col"
  cohort_conv_impl: str = "im2col"
  sampler: str = "loop"
  devices: int = 1
  cpu_threads: int = 0

  @classmethod
  def resolve(cls, config, backend: Optional[str] = None, device_count: Optional[int] = None,
              model=None) -> "ExecutionPlan":
    """The plan for `config.execution` on `backend` (default: JAX's default backend), as the
    run will execute it: with the split `model`, a server part with BatchNorm or dropout runs in
    one pass (chunks would change its numbers); the runs axis (`config.seeds`) runs on one
    device, event by event in its host loop."""
    backend = backend or jax.default_backend()
    ex = config.execution
    cpu = backend == "cpu"
    cohort = ex.cohort_size if ex.cohort_size >= 0 else (1 if cpu else 0)
    chunk = ex.server_chunk if ex.server_chunk >= 0 else (32 if cpu else 0)
    if model is not None and not model.server_rowwise:
      chunk = 0
    vmap = bool(ex.vmap_seeds) if ex.vmap_seeds >= 0 else not cpu
    conv = ex.get("conv_impl", "") or ("im2col" if cpu else "xla")
    cohort_conv = ex.get("cohort_conv_impl", "") or ("xla" if backend == "tpu" else "im2col")
    sampler = ex.get("sampler", "") or ("loop" if cpu else "batched")
    n_dev = ex.devices or (device_count if device_count is not None else jax.device_count())
    if config.get("seeds"):
      n_dev = 1
      cohort = cohort if vmap else 1
    threads = available_cores()
    return cls(backend=backend, cohort_size=int(cohort), server_chunk=int(chunk),
               vmap_seeds=vmap, conv_impl=conv, cohort_conv_impl=cohort_conv, sampler=sampler,
               devices=int(n_dev), cpu_threads=int(threads))

  def to_dict(self) -> Dict:
    return dataclasses.asdict(self)

  def describe(self) -> str:
    cohorts = {0: "unbounded cohorts", 1: "event by event"}.get(
        self.cohort_size, f"cohorts of <= {self.cohort_size}")
    chunk = "one pass" if self.server_chunk == 0 else f"{self.server_chunk}-row chunks"
    threads = f", {self.cpu_threads} CPU cores"
    return (f"execution plan on {self.backend}: client steps {cohorts} on {self.devices} "
            f"device(s), server update in {chunk}, seeds "
            f"{'vmapped' if self.vmap_seeds else 'in a host loop'}, convolutions "
            f"{self.conv_impl} (cohorts {self.cohort_conv_impl}), sampler {self.sampler}"
            f"{threads}")

  def log(self) -> None:
    logging.info("%s", self.describe())

  @contextlib.contextmanager
  def active(self):
    """Within it, the models' convolutions default to the plan's choices (at trace time: steps
    compiled inside keep them). The other choices reach the runners through `RunContext.plan`
    and GAS's hyperparameters (`server_chunk`, `sampler`)."""
    with layers.conv_defaults(self.conv_impl, self.cohort_conv_impl):
      yield self
