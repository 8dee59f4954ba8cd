"""The number of generated rows (stats.gen_rows, stats.gen_balance; spec §1.5) and the logit
adjustment's strength (clients.la_tau, eq. 6): hand-worked cases, host plan against the device
step."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gas_jax import losses
from gas_jax import stats as stats_lib
from gas_jax.algorithms import gas
from gas_jax.algorithms.gas import generation

M, B, DIM = 3, 4, 5


def _hp(**kw):
  return gas.GasHParams(participating=2, batch_size=B, num_classes=M, stats_method="cholesky",
                        **kw)


# A buffer of Q_s = 2 minibatches of B = 4 rows: label counts n = (5, 1, 1), one row padded.
LABELS = np.array([[0, 0, 0, 1], [0, 0, 2, 2]])
MASK = np.array([[True] * 4, [True, True, True, False]])
SEEN = np.ones(M, bool)


@pytest.mark.parametrize("kw, expected", [
    (dict(), [0, 3, 3]),                                  # REF: top up to B = 4
    (dict(gen_rows=2), [0, 1, 1]),                        # top up to 2
    (dict(gen_balance="equal"), [0, 4, 4]),               # all labels to max(4, 5) = 5
    (dict(gen_rows=7, gen_balance="equal"), [2, 6, 6]),   # all labels to max(7, 5) = 7
])
def test_generated_per_label_hand_worked(kw, expected):
  hp = _hp(**kw)
  got = generation.generated_per_label(hp, LABELS, MASK, SEEN)
  np.testing.assert_array_equal(got, expected)
  assert generation.generated_rows(hp, LABELS, MASK, SEEN) >= sum(expected)
  assert np.all(got <= gas.gen_samples(hp))
  # Before every label has statistics nothing is generated (label 2 unseen and absent).
  none = generation.generated_per_label(hp, LABELS[:1], MASK[:1], np.array([1, 1, 0], bool))
  assert not none.any()


@pytest.mark.parametrize("kw", [dict(), dict(gen_rows=7, gen_balance="equal")])
def test_device_generation_follows_the_plan(kw):
  """The server update's generation step gives each label the host plan's rows (masked and
  packed), so that all labels end equal under "equal"."""
  hp = _hp(**kw)
  rng = np.random.default_rng(0)
  st = stats_lib.init(M, DIM)
  st = stats_lib.merge(st, jnp.asarray(rng.normal(size=(9, DIM)), jnp.float32),
                       jnp.arange(9) % M, jnp.ones(9), jitter=1e-5, block=4)
  buf = gas.ActivationBuffer(
      acts=jnp.asarray(rng.normal(size=(2, B, DIM)), jnp.float32), labels=jnp.asarray(LABELS),
      row_mask=jnp.asarray(MASK), tags=jnp.ones(2))
  plan = generation.generated_per_label(hp, LABELS, MASK, SEEN)
  gen = generation.make_generate(hp, DIM)
  for rows in (None, generation.generated_rows(hp, LABELS, MASK, SEEN)):
    _, (gx, gy, gvalid), n, overflow, _ = gen(st, buf, jax.random.key(1), 0, rows)
    assert int(n) == plan.sum() and not bool(overflow)
    np.testing.assert_array_equal(np.bincount(np.asarray(gy)[np.asarray(gvalid)], minlength=M),
                                  plan)
    assert gx.shape[-1] == DIM


def test_la_tau_scales_the_log_prior():
  logits = jnp.array([[1.0, -0.5, 0.3], [0.2, 0.1, -1.0]])
  y, mask = jnp.array([0, 2]), jnp.array([True, True])
  lp = jnp.log(jnp.array([0.7, 0.2, 0.1]) + 1e-12)

  def ce(z):
    return float(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, y)))

  assert float(losses.logit_adjusted_ce(logits, y, mask, lp)) == ce(logits + lp)
  assert float(losses.logit_adjusted_ce(logits, y, mask, lp, 0.0)) == ce(logits)
  np.testing.assert_allclose(float(losses.logit_adjusted_ce(logits, y, mask, lp, 0.5)),
                             ce(logits + 0.5 * lp), rtol=1e-6)


def test_la_tau_reaches_the_client_loss():
  """la_tau=0 through the GAS client step equals REF with the log-priors zeroed (plain CE)."""
  from configs import digits  # noqa: PLC0415
  from gas_jax import execution  # noqa: PLC0415
  from gas_jax.models.registry import get_model  # noqa: PLC0415
  cfg = digits.get_config()
  model = get_model("cnn_small", "default", M, (4, 4, 1))
  plan = execution.ExecutionPlan.resolve(cfg)
  hp = gas.hparams_from_config(cfg, M, True, plan)
  assert hp.la_tau == 1.0
  cfg.clients.la_tau = 0.0
  hp0 = gas.hparams_from_config(cfg, M, True, plan)
  assert hp0.la_tau == 0.0
  rng = np.random.default_rng(0)
  batch = dict(x=jnp.asarray(rng.normal(size=(B, 4, 4, 1)), jnp.float32),
               y=jnp.array([0, 1, 2, 0]), mask=jnp.ones(B, bool),
               log_prior=jnp.log(jnp.array([0.8, 0.15, 0.05])))
  theta, phi = model.init(jax.random.key(0))
  batch["server"] = phi
  losses_ = {}
  for name, h, lp in (("tau0", hp0, batch["log_prior"]), ("plain", hp, jnp.zeros(M)),
                      ("ref", hp, batch["log_prior"])):
    algo = gas.build(model, h)
    p = model.trainable(theta)
    losses_[name] = float(algo.client_objective(p, theta, dict(batch, log_prior=lp),
                                                jax.random.key(1))[0])
  assert losses_["tau0"] == losses_["plain"] != losses_["ref"]
