"""How a run executes: every backend-dependent automatic choice, made in one place.

`ExecutionPlan.resolve(config, backend)` turns the `execution.*` fields (-1 / "" = "the fastest
for the backend") into concrete values. The run logs the plan at start and writes it into
config.json (key `execution_plan`), so a run says how it ran. None of these choices changes the
numbers beyond float32 rounding (tests/runners/test_equivalence.py, tests/run/test_multiseed.py);
they change the speed. The one exception is `precision`, which is the user's choice (never
automatic) and fixed for the life of a run (a resume may not change it: `gas_jax.workdir`). Tests build a plan directly (`ExecutionPlan(...)`) instead of depending on
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
| `precision` | `float32` (XLA's default for 32-bit matmuls and convolutions), `tf32` (TensorFloat-32 matmuls and convolutions), `bf16` (the models compute in bfloat16 with float32 parameters, optimiser states, losses and statistics) | float32 |

`precision=float32` is today's numbers. Note that XLA's default already lets a recent NVIDIA GPU
use TF32 inside float32 matmuls and a TPU use bfloat16 passes (JAX's "Matmul precision" docs); on
the CPU it is exact float32, where `tf32` changes nothing. `bf16` casts every model apply's
floating variables and input to bfloat16 and its outputs back to float32
(`models.registry.SplitModel.compute_dtype`).

Why these defaults (figures in docs/benchmarks.md): on the CPU vmapped convolutions are slower
than a loop of single ones, XLA's native convolution reaches under half the matmul rate on these
small images, and smaller server chunks stay in cache; on accelerators the opposite holds.
CPU threads: XLA's CPU runtime slows down far more than the share of cores when processes
share a machine, so `launch/compare.py --jobs=N` gives each job its own cores.

The plan also records `cpu_amx_bf16`: whether the host CPU has AMX-BF16 (`amx_bf16` among
/proc/cpuinfo's flags; None where that cannot be read: off Linux, or a CPU without x86 flags).
Without it XLA emulates bfloat16 matmuls, so `precision=bf16` on the CPU backend makes the run
slower, not faster: `log()` then warns once (measured on a 2-core AMD EPYC without AMX,
docs/benchmarks.md: 1024^3 matmul 83.5 GFLOP/s in bf16 vs 158.7 in float32, digits GAS 2.36 vs
1.21 s per global iteration).
"""
import contextlib
import dataclasses
import os
from typing import Dict, Optional, Tuple

import jax
from absl import logging

from gas_jax.models import layers

CONV_IMPLS = ("im2col", "xla")
PRECISIONS = ("float32", "tf32", "bf16")
SAMPLERS = ("loop", "batched")


CPUINFO = "/proc/cpuinfo"
AMX_BF16 = "amx_bf16"
# Measured without AMX (docs/benchmarks.md, "Mixed precision on a CPU without AMX").
BF16_WITHOUT_AMX = ("on a 2-core AMD EPYC without AMX (docs/benchmarks.md) a 1024^3 matmul ran at "
                    "83.5 GFLOP/s in bf16 vs 158.7 in float32, and digits GAS took 2.36 vs 1.21 s "
                    "per global iteration")


def read_cpuinfo() -> Optional[str]:
  """/proc/cpuinfo's text, or None where there is none (off Linux)."""
  try:
    with open(CPUINFO) as f:
      return f.read()
  except OSError:
    return None


def cpu_has_amx_bf16() -> Optional[bool]:
  """Whether the CPU lists `amx_bf16` in its /proc/cpuinfo flags; None if unknown (no
  /proc/cpuinfo, or no x86 `flags` line in it)."""
  text = read_cpuinfo()
  if text is None:
    return None
  for line in text.splitlines():
    key, _, value = line.partition(":")
    if key.strip() == "flags":
      return AMX_BF16 in value.split()
  return None


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
  precision: str = "float32"
  device: str = ""      # the first device's kind, e.g. "NVIDIA H200" ("" when not resolved here)
  cpu_amx_bf16: Optional[bool] = None   # the host CPU has AMX-BF16 (None: unknown)

  @classmethod
  def resolve(cls, config, backend: Optional[str] = None, device_count: Optional[int] = None,
              model=None) -> "ExecutionPlan":
    """The plan for `config.execution` on `backend` (default: JAX's default backend), as the
    run will execute it: with the split `model`, a server part with BatchNorm or dropout runs in
    one pass (chunks would change its numbers); the runs axis (`config.seeds`) runs on one
    device, event by event in its host loop."""
    device = ""
    if backend is None:
      backend = jax.default_backend()
      device = str(jax.devices()[0].device_kind)
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
               devices=int(n_dev), cpu_threads=int(threads),
               precision=ex.get("precision", "float32"), device=device,
               cpu_amx_bf16=cpu_has_amx_bf16())

  def to_dict(self) -> Dict:
    return dataclasses.asdict(self)

  def describe(self) -> str:
    cohorts = {0: "unbounded cohorts", 1: "event by event"}.get(
        self.cohort_size, f"cohorts of <= {self.cohort_size}")
    chunk = "one pass" if self.server_chunk == 0 else f"{self.server_chunk}-row chunks"
    amx = {True: "with AMX-BF16", False: "no AMX-BF16", None: "AMX-BF16 unknown"}[
        self.cpu_amx_bf16]
    threads = f", {self.cpu_threads} CPU cores ({amx})"
    where = f"{self.backend} ({self.device})" if self.device else self.backend
    return (f"execution plan on {where}: client steps {cohorts} on {self.devices} "
            f"device(s), server update in {chunk}, seeds "
            f"{'vmapped' if self.vmap_seeds else 'in a host loop'}, convolutions "
            f"{self.conv_impl} (cohorts {self.cohort_conv_impl}), sampler {self.sampler}"
            f"{threads}, precision {self.precision}")

  def warnings(self) -> Tuple[str, ...]:
    """What the plan warns about: bf16 on a CPU without AMX-BF16 (slower than float32)."""
    if self.precision != "bf16" or self.backend != "cpu" or self.cpu_amx_bf16:
      return ()
    has = ("has no AMX-BF16 (no amx_bf16 among /proc/cpuinfo's flags)"
           if self.cpu_amx_bf16 is False else
           "may lack AMX-BF16 (/proc/cpuinfo lists no x86 flags here)")
    return (f"execution.precision=bf16 on the CPU: this CPU {has}, so XLA emulates bfloat16 "
            f"matmuls and bf16 will be slower than float32: {BF16_WITHOUT_AMX}; "
            "execution.precision=float32 is faster here",)

  def log(self) -> None:
    logging.info("%s", self.describe())
    for w in self.warnings():
      logging.warning("%s", w)

  @contextlib.contextmanager
  def active(self):
    """Within it, the models' convolutions default to the plan's choices (at trace time: steps
    compiled inside keep them). The other choices reach the runners through `RunContext.plan`
    and GAS's hyperparameters (`server_chunk`, `sampler`). `precision=tf32` sets JAX's default
    matmul precision to TensorFloat-32 here; bf16 is the model's compute dtype
    (`RunContext.model`, set by `context.build_context`)."""
    matmul = (jax.default_matmul_precision("tensorfloat32") if self.precision == "tf32"
              else contextlib.nullcontext())
    with layers.conv_defaults(self.conv_impl, self.cohort_conv_impl), matmul:
      yield self
