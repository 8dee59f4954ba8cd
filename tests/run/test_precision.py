"""execution.precision: float32 (today's numbers) | tf32 | bf16 (models in bfloat16 with float32
parameters, optimiser states, losses and Gaussian statistics)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from gas_jax import context, execution, train
from gas_jax import workdir as workdir_lib
from gas_jax.models.registry import get_model, with_precision
from gas_jax.registry import ALGORITHMS

# The default suite runs GAS in bf16 (the precision that changes the numbers); every other pair
# is slow (GAS in tf32 and FedAvg in bf16 too, since 2026-12-08: the default suite's budget).
FAST = {("gas", "bf16")}
CASES = [pytest.param(m, p, marks=() if (m, p) in FAST else pytest.mark.slow)
         for m in ALGORITHMS.names() for p in ("tf32", "bf16")]
T = 3


def _config(method, precision="float32"):
  c = digits.get_config()
  c.algorithm, c.num_global_iters = method, T
  c.clients.num, c.clients.participating, c.clients.local_iters = 10, 4, 4
  c.execution.precision = precision
  return c


def _f32(tree):
  return all(np.asarray(a).dtype == np.float32 for a in jax.tree_util.tree_leaves(tree)
             if jnp.issubdtype(np.asarray(a).dtype, jnp.floating))


@pytest.fixture(scope="module")
def float32_run(tmp_path_factory):
  """method -> the folder of its float32 run (made once per module)."""
  root, done = tmp_path_factory.mktemp("f32"), {}

  def get(method):
    if method not in done:
      done[method] = root / method
      train.train_and_evaluate(_config(method), str(done[method]))
    return done[method]
  return get


@pytest.mark.parametrize("method,precision", CASES)
def test_every_method_runs_in_every_precision_close_to_float32(method, precision, tmp_path,
                                                               float32_run):
  ref_dir = float32_run(method)
  with open(ref_dir / "summary.json") as f:
    ref = json.load(f)
  got = train.train_and_evaluate(_config(method, precision), str(tmp_path / precision))
  # Digits after 3 global iterations: accuracy within 5 points, loss within 10 %.
  assert abs(got["final_accuracy"] - ref["final_accuracy"]) <= 0.05, (got, ref)
  rows = [[json.loads(l) for l in open(d / "metrics.jsonl")]
          for d in (ref_dir, tmp_path / precision)]
  for a, b in zip(*rows):
    assert abs(a["test_loss"] - b["test_loss"]) <= 0.1 * a["test_loss"], (a, b)
  if precision == "bf16":     # the path was taken: bfloat16 rounding shows in the numbers
    assert any(a["test_loss"] != b["test_loss"] for a, b in zip(*rows))
  with open(tmp_path / precision / "config.json") as f:
    assert json.load(f)["execution_plan"]["precision"] == precision


def test_bf16_computes_the_model_in_bfloat16_and_returns_float32():
  m = get_model("cnn_small", "default", 10, (8, 8, 1))
  mb = with_precision(m, "bf16")
  assert with_precision(m, "float32") is m and with_precision(m, "tf32") is m
  assert mb.compute_dtype == "bfloat16" and mb.activation_shape == m.activation_shape
  cp, sp = m.init(jax.random.PRNGKey(0))
  x = jax.random.normal(jax.random.PRNGKey(1), (16, 8, 8, 1))
  z32, zb = m.client_apply(cp, x), mb.client_apply(cp, x)
  assert zb.dtype == jnp.float32
  # The same as applying the module to the bfloat16-rounded parameters and input by hand.
  cast = lambda t: jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), t)
  want = m.client.apply({"params": cast(cp)}, cast(x)).astype(jnp.float32)
  np.testing.assert_array_equal(np.asarray(zb), np.asarray(want))
  err = float(jnp.max(jnp.abs(zb - z32)) / jnp.max(jnp.abs(z32)))
  assert 1e-4 < err < 3e-2            # bfloat16's rounding, no more
  logits = mb.server_apply(sp, zb)
  assert logits.dtype == jnp.float32
  # Gradients reach the float32 parameters as float32.
  g = jax.grad(lambda p: jnp.sum(mb.client_apply(p, x) ** 2))(cp)
  assert _f32(g) and all(float(jnp.max(jnp.abs(v))) > 0 for v in jax.tree_util.tree_leaves(g))


def test_bf16_keeps_parameters_optimiser_states_and_statistics_float32():
  c = _config("gas", "bf16")
  c.num_global_iters = 1
  ctx = context.build_context(c, plan=execution.ExecutionPlan(precision="bf16"))
  assert ctx.model.compute_dtype == "bfloat16"
  runner = ALGORITHMS.get("gas")(ctx)
  before = jax.device_get(runner.state.server.stats)
  runner.run_iteration()
  state = jax.device_get(runner.state)
  changed = jax.tree_util.tree_map(lambda a, b: not np.array_equal(a, b), before,
                                   state.server.stats)
  assert any(jax.tree_util.tree_leaves(changed))          # the statistics were fed ...
  assert _f32(state.client) and _f32(state.server) and _f32(state.buffer)   # ... in float32


def test_precision_is_fixed_for_the_life_of_a_run():
  stored = _config("gas").to_dict()
  new = _config("gas", "bf16").to_dict()
  assert workdir_lib.differences(stored, new) == [
      "execution.precision: 'float32' -> 'bf16'"]
  # Runs stored before the field existed continue in float32 only.
  del stored["execution"]["precision"]
  assert workdir_lib.differences(stored, _config("gas").to_dict()) == []
  assert workdir_lib.differences(stored, new) != []


@pytest.mark.slow   # ~1 min on 2 shared cores (the default suite's time budget, 2026-12-08)
def test_bf16_running_statistics_accumulate_in_float32():
  """BatchNorm's running averages are not rounded to bfloat16 at each step: started at values
  near 1000 (bfloat16 spacing 4 there), one bf16 training step moves them as the float32 step
  does, up to the bfloat16 error of the batch's own statistics."""
  m = get_model("cnn_small_bn", "default", 10, (8, 8, 1))
  mb = with_precision(m, "bf16")
  cp, _ = m.init(jax.random.PRNGKey(0))
  cp = dict(cp, batch_stats=jax.tree_util.tree_map(
      lambda a: 1000.3 + jnp.arange(a.size, dtype=jnp.float32).reshape(a.shape) / 7,
      cp["batch_stats"]))
  x = jax.random.normal(jax.random.PRNGKey(1), (32, 8, 8, 1))
  _, new32 = m.client_train(cp, x)
  zb, newb = mb.client_train(cp, x)
  assert zb.dtype == jnp.float32 and _f32(newb)
  for a, b, old in zip(jax.tree_util.tree_leaves(new32["batch_stats"]),
                       jax.tree_util.tree_leaves(newb["batch_stats"]),
                       jax.tree_util.tree_leaves(cp["batch_stats"])):
    assert float(jnp.max(jnp.abs(a - old))) > 1e-3          # the step moved them
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=0.05)
