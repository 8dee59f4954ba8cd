"""The eq. 44 regularisers in the split methods' client loss (`gas_jax.privacy.regularisers`).

Toy runs (tests/helpers: cnn_small on 4x4 or 8x8 images, a decoder of 1 block and 8 channels):
the unit checks of the client step (REF unchanged; the regulariser reaches the client only) and
S2FL with NoPeek in the default suite; cohorts, resume and the other SFL cases slow-marked (the
decoder's programs take minutes to compile on 2 CPU cores). Slow digits runs: every split method
with each regulariser, resume, and method "none" with the other fields changed. The module
shares one persistent compilation cache (programs privacy does not change compile once).
"""
import functools
import os
import types

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import digits
from helpers import baseline_toys, cli_runs, gas_toys
from gas_jax import checkpoint, engine, train
from gas_jax.privacy import distance_correlation, regularisers
from gas_jax.registry import ALGORITHMS
from gas_jax.runners import gas_runner

tree_map = jax.tree_util.tree_map
leaves = jax.tree_util.tree_leaves
SMALL = dict(privacy__decoder_blocks=1, privacy__decoder_channels=8)


@pytest.fixture(autouse=True, scope="module")
def _cache(compile_cache):
  yield


def _with_images(ctx):
  """Toy contexts have no Dataset; the regulariser reads the image range of x_train."""
  ctx.dataset = types.SimpleNamespace(num_classes=int(ctx.data["log_prior"].shape[1]),
                                      x_train=np.asarray(ctx.data["x"]))
  return ctx


def _gas_runner(method="none", gamma=0.3, tau=0.5, **kw):
  cfg = gas_toys.config(privacy__method=method, privacy__gamma=gamma, privacy__tau=tau,
                        **dict(SMALL, **kw))
  return ALGORITHMS.get(cfg.algorithm)(_with_images(gas_toys.context(cfg)))


@functools.lru_cache(maxsize=None)
def _toy_algo(method="none", gamma=0.3):
  """The toy GAS algorithm, its initial state (one jitted init) and context, without a runner
  (algo, state, ctx); shared by the tests (nothing donates the state)."""
  cfg = gas_toys.config(privacy__method=method, privacy__gamma=gamma, privacy__tau=0.1,
                        privacy__decoder_lr=0.02, **SMALL)
  ctx = _with_images(gas_toys.context(cfg))
  algo = gas_runner.build_algorithm(ctx, generate=True)
  return types.SimpleNamespace(algo=algo, ctx=ctx, state=jax.jit(algo.init)(jax.random.key(0)))


def _event(toy, slot=0, upload=True, aggregate=True):
  """One client event of client `slot` that uploads (and aggregates) after its step."""
  idx, mask = toy.ctx.clients.next_batch(slot)
  ev = types.SimpleNamespace(client=slot, slot=slot, buf_pos=0, upload=upload,
                             aggregate=aggregate)
  return engine.event_arrays(ev, idx, mask, 1.0, 1.0, 0)


def _step(toy, arrays):
  """One client event, jitted without donation: (client state, buffer, out)."""
  st = toy.state
  return jax.jit(engine.client_event(toy.algo))(
      st.client, st.buffer, st.server.server, toy.ctx.data, arrays, jax.random.key(2))


def _same(a, b):
  for x, y in zip(leaves(a), leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _differs(a, b):
  return any(not np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(leaves(a), leaves(b), strict=True))


def _close(a, b, rtol=1e-5):
  """Every leaf within rtol of its norm."""
  for x, y in zip(leaves(a), leaves(b), strict=True):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    assert np.linalg.norm(x - y) <= rtol * max(np.linalg.norm(y), 1e-30), (
        np.linalg.norm(x - y) / np.linalg.norm(y))


def test_masked_dcor_is_dcor_of_the_real_rows():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(8, 4, 4, 1)).astype(np.float32)
  z = (np.tanh(x.reshape(8, -1) @ rng.normal(size=(16, 12)))
       + 0.3 * rng.normal(size=(8, 12))).astype(np.float32)
  mask = np.arange(8) < 5
  want = float(distance_correlation(x[:5], z[:5]))
  got = float(regularisers.masked_distance_correlation(x, z, mask))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  x2 = x.copy()
  x2[5:] = x[0] + 3.0                 # padded rows do not count (up to float32 rounding)
  np.testing.assert_allclose(float(regularisers.masked_distance_correlation(x2, z, mask)), want,
                             rtol=1e-4)
  np.testing.assert_allclose(float(regularisers.masked_distance_correlation(x, z, mask | True)),
                             float(distance_correlation(x, z)), rtol=1e-5)


def test_method_none_is_the_ref_client_step():
  """Method "none" builds no regulariser and no decoder state, and an inversion regulariser of
  strength 0 leaves the client step's outputs (client state, activation buffer, loss) bit for
  bit as they are without one: the regulariser is purely additive."""
  off, zero = _toy_algo("none"), _toy_algo("inversion", gamma=0.0)
  assert off.algo.hparams.privacy is None and off.state.client.decoder is None
  assert zero.state.client.decoder is not None
  arrays = _event(off)
  a_cs, a_buf, a_out = _step(off, arrays)
  b_cs, b_buf, b_out = _step(zero, arrays)
  assert "privacy_score" in b_out and "privacy_score" not in a_out
  b_out.pop("privacy_score")
  _same((a_cs, a_buf, a_out), (b_cs.replace(decoder=None), b_buf, b_out))


def _trained_decoder(runner, arrays, steps=30):
  """The global decoder after `steps` decoder steps on the event's batch (so that SSIM > tau
  and the inversion penalty is active)."""
  st, reg = runner.state, regularisers.make(runner.ctx.model, runner.algo.hparams.privacy)
  x = runner.ctx.data["x"][arrays["idx"]]
  theta = tree_map(lambda p: p[0], st.client.slots)
  a, _ = runner.ctx.model.client_train(theta, x, jax.random.key(0), arrays["mask"])
  step = jax.jit(lambda d, o: reg.decoder_step(d, o, x, a, arrays["mask"]))
  dec, opt = st.client.decoder.global_, reg.init_opt(st.client.decoder.global_)
  for _ in range(steps):
    dec, opt = step(dec, opt)
  return dec


# The inversion case trains a decoder first (~3 min on 2 shared cores): slow; the default suite
# keeps NoPeek, and test_method_none_is_the_ref_client_step builds the inversion step.
@pytest.mark.parametrize("method", [pytest.param("inversion", marks=pytest.mark.slow),
                                    "nopeek"])
def test_regulariser_reaches_the_client_parameters_only(method):
  """For one client step, gamma = 0 against gamma = 0.3: the gradient w.r.t. phi is identical
  and the one w.r.t. the decoder is 0 (the regulariser flows into neither), the decoder's own
  update is identical, the gradient w.r.t. the client's parameters and its update differ."""
  runners = [_toy_algo(method, gamma=g) for g in (0.0, 0.3)]
  arrays = _event(runners[0])          # the same event for both
  data = runners[0].ctx.data
  batch = dict(x=data["x"][arrays["idx"]], y=data["y"][arrays["idx"]], mask=arrays["mask"],
               log_prior=data["log_prior"][0])
  dec = _trained_decoder(runners[0], arrays) if method == "inversion" else None
  grads, scores = [], []
  for r in runners:
    theta = tree_map(lambda p: p[0], r.state.client.slots)

    def loss(p, phi, d, r=r, theta=theta):
      return r.algo.client_objective(p, theta, dict(batch, server=phi), jax.random.key(1), d)

    (_, aux), g = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
        r.ctx.model.trainable(theta), r.state.server.server, dec)
    grads.append(g)
    scores.append(float(aux[-1]))
  assert scores[0] == scores[1] and scores[0] > 0.1, scores   # the penalty is active
  _same(grads[0][1], grads[1][1])                               # d/d phi
  assert all(not np.any(np.asarray(v)) for v in leaves(grads[1][2]))   # d/d decoder = 0
  assert _differs(grads[0][0], grads[1][0])                     # d/d client parameters
  (cs0, buf0, _), (cs1, buf1, _) = (_step(r, arrays) for r in runners)
  _same(buf0, buf1)                                             # the activation sent
  assert _differs(cs0.global_client, cs1.global_client)
  if method == "inversion":
    _same(cs0.decoder, cs1.decoder)
    assert _differs(cs1.decoder.global_, runners[1].state.client.decoder.global_)


@pytest.mark.slow   # ~2-5 min on 2 CPU cores: every cohort size compiles with the decoders
def test_cohorts_equal_event_by_event_with_inversion():
  """execution.cohort_size=0 (vmapped cohorts) and 1 give the same rows and client states after
  2 global iterations: the client models within 1e-5 of each leaf's norm, the decoders and the
  optimiser states within 1e-4. Adam divides each gradient component by its own scale, so the
  float32 rounding of a component that is nearly 0 becomes a step of up to lr (a decoder of 8
  channels, whose conv biases before a GroupNorm of one channel per group get gradients that
  are exactly 0 but for rounding, differs by ~1e-3 there; its output does not)."""
  kw = dict(num=4, participating=3, tau=0.0, privacy__decoder_channels=16)
  runs = [_gas_runner("inversion", execution__cohort_size=size, **kw) for size in (1, 0)]
  dec0 = jax.device_get(runs[0].state.client.decoder.global_)
  rows = [[r.run_iteration() for _ in range(2)] for r in runs]
  for ra, rb in zip(*rows):
    for key in ("client_loss", "server_loss"):
      np.testing.assert_allclose(ra[key], rb[key], rtol=1e-5)
    np.testing.assert_allclose(ra["privacy_score"], rb["privacy_score"], rtol=1e-4)
  a, b = (r.state.client for r in runs)
  _close((a.slots, a.global_client), (b.slots, b.global_client), rtol=1e-5)
  _close((a.client_opt, a.decoder), (b.client_opt, b.decoder), rtol=1e-4)
  assert _differs(a.decoder.global_, dec0)


@pytest.mark.slow   # ~1 min on 2 CPU cores
def test_resume_with_inversion_equals_uninterrupted(tmp_path):
  """2 iterations, a checkpoint (orbax, as `callbacks.Checkpoints` writes it), a new runner
  restored from it and 2 more iterations: the rows and states of 4 uninterrupted ones."""
  kw = dict(num=4, participating=3, tau=0.0)
  ref = _gas_runner("inversion", **kw)
  rows = [ref.run_iteration() for _ in range(2)]
  sd = ref.state_dict()
  ckpt = checkpoint.Checkpointer(str(tmp_path), 2)
  ckpt.save(2, sd.pop("device"), dict(runner=sd))
  rows += [ref.run_iteration() for _ in range(2)]
  resumed = _gas_runner("inversion", **kw)
  step, device, host = ckpt.restore_latest(resumed.state_dict()["device"])
  assert step == 2 and device.client.decoder is not None
  resumed.load_state_dict(dict(host["runner"], device=device))
  assert [resumed.run_iteration() for _ in range(2)] == rows[2:]
  _same(resumed.state, ref.state)


@pytest.mark.parametrize("algorithm, method, compare", [
    ("s2fl", "nopeek", False),
    pytest.param("s2fl", "nopeek", True, marks=pytest.mark.slow),
    pytest.param("minibatch_sfl", "inversion", True, marks=pytest.mark.slow),
    pytest.param("minibatch_sfl", "nopeek", True, marks=pytest.mark.slow),
    pytest.param("s2fl", "inversion", True, marks=pytest.mark.slow)])
def test_sfl_regulariser_trains_and_changes_the_client(algorithm, method, compare):
  """Toy MiniBatch-SFL / S2FL, 2 rounds: finite, a privacy score in each row, the global
  decoder trained (inversion) and, where `compare`, another client model than with gamma=0."""
  finals = []
  for gamma in (0.3, 0.0) if compare else (0.3,):
    cfg = baseline_toys.config(algorithm, privacy__method=method, privacy__gamma=gamma,
                               privacy__tau=0.0, **SMALL)
    runner = ALGORITHMS.get(algorithm)(_with_images(baseline_toys.context(cfg)))
    dec0 = jax.device_get(runner.state.decoder)
    rows = [runner.run_iteration() for _ in range(2)]
    assert all(np.isfinite(r["client_loss"]) and np.isfinite(r["privacy_score"]) for r in rows)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in leaves(runner.state))
    assert (runner.state.decoder is None) == (method == "nopeek")
    if method == "inversion":
      assert _differs(runner.state.decoder, dec0)
    finals.append(runner.state)
  if compare:
    assert _differs(finals[0].theta, finals[1].theta)


# ---- digits ------------------------------------------------------------------------------------

def _digits(workdir, algorithm="gas", iters=2, **privacy):
  c = digits.get_config()
  c.algorithm, c.num_global_iters, c.checkpoint_every = algorithm, iters, 2
  c.clients.local_iters = 2
  for k, v in privacy.items():
    c.privacy[k] = v
  train.train_and_evaluate(c, str(workdir))
  return cli_runs.rows(str(workdir))


def _checkpoint(workdir):
  path = os.path.join(str(workdir), "checkpoints")
  step = max(int(d) for d in os.listdir(path) if d.isdigit())
  return ocp.StandardCheckpointer().restore(os.path.join(path, str(step), "state"))


@pytest.mark.slow   # ~40 s on 2 CPU cores; test_method_none_is_the_ref_client_step is the unit
def test_digits_method_none_ignores_the_other_privacy_fields(tmp_path):
  """With method "none" the strength, threshold and decoder settings change nothing."""
  a = _digits(tmp_path / "a", iters=1)
  b = _digits(tmp_path / "b", iters=1, method="none", gamma=5.0, tau=0.0, decoder_blocks=0,
              decoder_channels=3, decoder_lr=1.0)
  assert a == b and "privacy_score" not in a[0]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["gas", "minibatch_sfl", "s2fl"])
def test_digits_regularisers_train_and_change_the_client(tmp_path, algorithm):
  """2 digits iterations (E=2) with the full decoder (res_normN4C64): finite rows with a
  privacy score, and client models that differ from those of method "none"."""
  def theta(tree):
    return tree["client"]["global_client"] if algorithm == "gas" else tree["theta"]

  _digits(tmp_path / "none", algorithm)
  base = theta(_checkpoint(tmp_path / "none"))
  for method in ("inversion", "nopeek"):
    rows = _digits(tmp_path / method, algorithm, method=method, tau=0.0)
    assert all(np.isfinite(r["client_loss"]) and np.isfinite(r["privacy_score"])
               for r in rows), rows
    assert method == "inversion" or all(0.0 <= r["privacy_score"] <= 1.0 for r in rows)
    tree = _checkpoint(tmp_path / method)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in leaves(tree))
    assert _differs(theta(tree), base)


@pytest.mark.slow
def test_digits_resume_with_inversion_equals_uninterrupted(tmp_path):
  """2 + 2 global iterations in one workdir (the second run resumes from the checkpoint at 2)
  equal 4 uninterrupted ones: metrics.jsonl (but the wall time) and the checkpoint."""
  _digits(tmp_path / "a", iters=2, method="inversion")
  resumed = _digits(tmp_path / "a", iters=4, method="inversion")
  whole = _digits(tmp_path / "b", iters=4, method="inversion")
  assert resumed == whole
  _same(_checkpoint(tmp_path / "a"), _checkpoint(tmp_path / "b"))
