"""The execution plan (`gas_jax.execution`): every automatic choice in one place."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import digits
from helpers import gas_toys
from helpers.cli_runs import ROOT
from gas_jax import execution
from gas_jax.execution import ExecutionPlan
from gas_jax.registry import ALGORITHMS


@pytest.mark.parametrize("backend,expected", [
    ("cpu", dict(cohort_size=1, server_chunk=32, vmap_seeds=False, conv_impl="im2col",
                 cohort_conv_impl="im2col", sampler="loop")),
    ("gpu", dict(cohort_size=0, server_chunk=0, vmap_seeds=True, conv_impl="xla",
                 cohort_conv_impl="im2col", sampler="batched")),
    ("tpu", dict(cohort_size=0, server_chunk=0, vmap_seeds=True, conv_impl="xla",
                 cohort_conv_impl="xla", sampler="batched")),
])
def test_automatic_choices_per_backend(backend, expected):
  plan = ExecutionPlan.resolve(digits.get_config(), backend=backend, device_count=4)
  assert plan.backend == backend and plan.devices == 4
  for field, value in expected.items():
    assert getattr(plan, field) == value, field
  assert plan.cpu_threads == execution.available_cores() >= 1


def test_the_plan_says_how_the_run_executes():
  """Server parts with BatchNorm run in one pass; the runs axis runs on one device, and event
  by event in its host loop."""
  from gas_jax.models import get_model   # noqa: PLC0415
  c = digits.get_config()
  bn = get_model("cnn_small_bn", "default", 10, (8, 8, 1))
  plain = get_model("cnn_small", "default", 10, (8, 8, 1))
  assert ExecutionPlan.resolve(c, backend="cpu", model=plain).server_chunk == 32
  assert ExecutionPlan.resolve(c, backend="cpu", model=bn).server_chunk == 0
  c.seeds = (0, 1)
  loop = ExecutionPlan.resolve(c, backend="gpu", device_count=4)
  assert loop.vmap_seeds and loop.cohort_size == 0 and loop.devices == 1
  c.execution.vmap_seeds = 0
  host = ExecutionPlan.resolve(c, backend="gpu", device_count=4)
  assert not host.vmap_seeds and host.cohort_size == 1 and host.devices == 1


def test_the_plan_picks_the_models_convolution():
  """`plan.active()` sets the convolution every conv layer uses at trace time."""
  from gas_jax.models import layers   # noqa: PLC0415
  for conv, cohort in (("xla", "im2col"), ("im2col", "xla")):
    with ExecutionPlan(conv_impl=conv, cohort_conv_impl=cohort).active():
      assert layers.conv_impl() == conv and layers.cohort_conv_impl() == cohort
      with layers.conv_scope("im2col"):       # an explicit scope still wins
        assert layers.conv_impl() == "im2col"


def test_explicit_fields_win_over_the_backend():
  c = digits.get_config()
  c.execution.cohort_size, c.execution.server_chunk, c.execution.vmap_seeds = 4, 0, 1
  c.execution.conv_impl, c.execution.sampler, c.execution.devices = "xla", "batched", 2
  plan = ExecutionPlan.resolve(c, backend="cpu", device_count=8)
  assert (plan.cohort_size, plan.server_chunk, plan.vmap_seeds, plan.conv_impl, plan.sampler,
          plan.devices) == (4, 0, True, "xla", "batched", 2)
  assert "cohorts of <= 4" in plan.describe() and "xla" in plan.describe()


def test_a_runner_follows_the_plan_it_is_given():
  """The plan, not the backend, decides: cohorts on the CPU when the plan says so. And the
  cohorts give the event-by-event numbers (the default suite's instance of "cohorts = event by
  event"; on digits: tests/runners/test_equivalence.py, slow): 2 global iterations of the toy
  GAS run, the same counters and simulated times, losses and final models within 1e-5."""
  cfg = gas_toys.config()
  rows, models = [], []
  for size in (1, 0):
    plan = ExecutionPlan(backend="cpu", cohort_size=size, devices=1)
    runner = ALGORITHMS.get("gas")(gas_toys.context(cfg, plan=plan))
    assert runner.cohort_size == size
    rows.append([runner.run_iteration() for _ in range(2)])
    assert rows[-1][0]["client_steps"] > 0
    models.append(jax.device_get(runner.eval_params()))
  for a, b in zip(*rows):
    for key in ("server_updates", "client_steps", "simulated_time_s", "generated_per_update"):
      assert a[key] == b[key], key
    for key in ("client_loss", "server_loss"):
      assert (a[key] is None) == (b[key] is None), key
      if a[key] is not None:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5)
  for x, y in zip(jax.tree_util.tree_leaves(models[0]), jax.tree_util.tree_leaves(models[1]),
                  strict=True):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    assert np.linalg.norm(x - y) <= 1e-5 * max(np.linalg.norm(y), 1e-30)


def test_core_slots_split_the_cores():
  assert execution.core_slots(1, [0, 1]) == [[0, 1]]
  assert execution.core_slots(2, [0, 1]) == [[0], [1]]
  assert execution.core_slots(2, [0, 1, 2, 3, 4]) == [[0, 1], [2, 3, 4]]
  assert execution.core_slots(3, [4, 5]) == [[4], [5], [4]]


def test_cpu_threads_limits_the_process():
  code = ("from gas_jax import execution; print(execution.limit_cpu_threads(1), "
          "execution.available_cores())")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=True).stdout.split()
  assert out == ["1", "1"]


def test_bad_execution_values_are_refused():
  from gas_jax import config as config_lib
  for field, value in (("conv_impl", "fft"), ("sampler", "fast"), ("cpu_threads", -1)):
    c = digits.get_config()
    c.execution[field] = value
    with pytest.raises(config_lib.ConfigError, match=f"execution.{field}"):
      config_lib.validate(c)


X86 = "processor\t: 0\nvendor_id\t: {v}\nflags\t\t: fpu sse2 avx2 {amx}avx512f\n\n"


@pytest.mark.parametrize("cpuinfo, expected", [
    (X86.format(v="GenuineIntel", amx="amx_bf16 amx_tile amx_int8 "), True),
    (X86.format(v="AuthenticAMD", amx=""), False),
    (X86.format(v="GenuineIntel", amx="amx_tile "), False),      # AMX without its bf16 part
    ("processor\t: 0\nFeatures\t: fp asimd bf16\n", None),       # no x86 flags line (arm64)
    (None, None)])                                                # no /proc/cpuinfo (macOS)
def test_the_plan_records_whether_the_cpu_has_amx_bf16(monkeypatch, cpuinfo, expected):
  monkeypatch.setattr(execution, "read_cpuinfo", lambda: cpuinfo)
  plan = ExecutionPlan.resolve(digits.get_config(), backend="cpu", device_count=1)
  assert plan.cpu_amx_bf16 is expected
  assert plan.to_dict()["cpu_amx_bf16"] is expected      # config.json's execution_plan


def _logged(plan, monkeypatch):
  out = dict(info=[], warning=[])
  for level in out:
    monkeypatch.setattr(execution.logging, level,
                        lambda fmt, *a, _l=level: out[_l].append(fmt % a))
  plan.log()
  return out


@pytest.mark.parametrize("precision, backend, amx, warns", [
    ("bf16", "cpu", False, True), ("bf16", "cpu", None, True), ("bf16", "cpu", True, False),
    ("float32", "cpu", False, False), ("tf32", "cpu", False, False),
    ("bf16", "gpu", False, False)])
def test_bf16_on_a_cpu_without_amx_logs_one_warning(monkeypatch, precision, backend, amx, warns):
  logged = _logged(ExecutionPlan(backend=backend, precision=precision, cpu_amx_bf16=amx),
                   monkeypatch)
  assert len(logged["info"]) == 1 and logged["info"][0].startswith("execution plan on")
  assert len(logged["warning"]) == int(warns)
  if warns:
    (w,) = logged["warning"]
    assert w.startswith("execution.precision=bf16 on the CPU: this CPU ")
    assert "bf16 will be slower than float32" in w and "\n" not in w
    for figure in ("83.5", "158.7", "2.36", "1.21", "docs/benchmarks.md"):
      assert figure in w, figure


def test_a_plan_recorded_before_the_amx_field_still_resumes():
  """config.json of an older run has no execution_plan.cpu_amx_bf16: the resume goes on."""
  from gas_jax import workdir as workdir_lib   # noqa: PLC0415
  c = digits.get_config().to_dict()
  new = dict(c, execution_plan=ExecutionPlan(cpu_amx_bf16=False).to_dict())
  old_plan = ExecutionPlan().to_dict()
  old_plan.pop("cpu_amx_bf16")
  assert workdir_lib.differences(dict(c, execution_plan=old_plan), new, done_iters=2) == []
