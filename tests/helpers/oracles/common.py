"""Shared pieces of the oracles: float64 parameter trees, REF's SGD (spec §0), the losses, the
time model (spec §1.9) and the forward/backward of the project's own split model.

Only the *network* comes from gas_jax (`SplitModel.client_train` / `server_train`, via
`jax.grad`); everything algorithmic (optimiser, clipping, losses, clocks) is written here.
The oracles support stateless models only (no BatchNorm running statistics, no dropout)."""
import math

import jax
import jax.numpy as jnp
import numpy as np

tree_map = jax.tree_util.tree_map


def to64(tree):
  """A host float64 copy of a parameter tree."""
  return tree_map(lambda a: np.array(a, dtype=np.float64), tree)


def to32(tree):
  """The float32 device tree the network is evaluated with."""
  return tree_map(lambda a: jnp.asarray(np.asarray(a, dtype=np.float32)), tree)


def copy(tree):
  return tree_map(lambda a: np.array(a, copy=True), tree)


def global_norm(tree) -> float:
  return math.sqrt(sum(float(np.sum(np.square(np.asarray(g, np.float64))))
                       for g in jax.tree_util.tree_leaves(tree)))


class SGD:
  """PyTorch SGD as REF runs it (spec §0), one instance per model part, never reset:
  g <- clip(g) (total L2 norm); g <- g + wd * w; buf <- m * buf + g (buf = g on the first step);
  w <- w - lr * buf. Records every pre-clip gradient norm in `norms`."""

  def __init__(self, lr, momentum, weight_decay, clip_norm):
    self.lr, self.momentum, self.wd, self.clip = lr, momentum, weight_decay, clip_norm
    self.buf = None
    self.norms = []

  def step(self, params, grads):
    p_leaves, treedef = jax.tree_util.tree_flatten(params)
    g_leaves = [np.asarray(g, np.float64) for g in jax.tree_util.tree_leaves(grads)]
    assert len(p_leaves) == len(g_leaves)
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in g_leaves))
    self.norms.append(norm)
    if self.clip and norm > self.clip:
      g_leaves = [g * (self.clip / norm) for g in g_leaves]
    g_leaves = [g + self.wd * p for g, p in zip(g_leaves, p_leaves)]
    if self.buf is None:
      self.buf = [g.copy() for g in g_leaves]
    else:
      self.buf = [self.momentum * b + g for b, g in zip(self.buf, g_leaves)]
    new = [p - self.lr * b for p, b in zip(p_leaves, self.buf)]
    return jax.tree_util.tree_unflatten(treedef, new)

  def clipped_steps(self) -> int:
    return sum(n > self.clip for n in self.norms) if self.clip else 0


def ce_rows(logits, y):
  """Per-row cross-entropy, written out: log sum exp(z) - z_y."""
  z = logits - jnp.max(logits, axis=-1, keepdims=True)
  lse = jnp.log(jnp.sum(jnp.exp(z), axis=-1))
  return lse - jnp.take_along_axis(z, y[:, None], axis=1)[:, 0]


def mean_ce(logits, y):
  return jnp.mean(ce_rows(logits, y))


def pad_rows(x, y, rows):
  """(x, y) zero-padded to `rows` rows plus the validity mask: one compiled shape for server
  batches of any size (the loss averages over the valid rows only)."""
  n = len(y)
  assert n <= rows, (n, rows)
  xp = np.zeros((rows,) + x.shape[1:], np.float32)
  yp = np.zeros(rows, np.int32)
  xp[:n], yp[:n] = x, y
  return xp, yp, np.arange(rows) < n


def log_prior(labels_of_client, num_classes):
  """a_k = log(p_k + 1e-12) from the client's whole local label histogram (spec §1.1)."""
  counts = np.bincount(labels_of_client, minlength=num_classes).astype(np.float64)
  return np.log(counts / counts.sum() + 1e-12)


# --- time model (spec §1.9), independent of gas_jax.system.timing -----------------------------

def uplink_rate(distance_km):
  pl = 128.1 + 37.6 * np.log10(np.asarray(distance_km, np.float64))
  return 1e7 * np.log2(1.0 + 0.2 * 10.0 ** (-pl / 10.0) / (1e7 * 3.981e-21))


class Clock:
  """Per-client durations: F / c_k (one forward or backward of the client part, per image),
  B A / r_k (one activation upload), Mc / r_k (client-part model), and the FL ones."""

  def __init__(self, compute, distance, batch_size, client_flops, activation_bits,
               client_model_bits, full_flops=0.0, full_model_bits=0.0):
    self.c = np.asarray(compute, np.float64)
    self.r = uplink_rate(distance)
    self.B, self.F, self.A, self.Mc = batch_size, client_flops, activation_bits, client_model_bits
    self.F_full, self.M_full = full_flops, full_model_bits

  def fc(self, k):
    return self.F / self.c[k]

  def act_up(self, k):
    return self.B * self.A / self.r[k]

  def model_up(self, k):
    return self.Mc / self.r[k]

  def fl_duration(self, k, local_iters):
    """E * 2 F_full / c_k + Mbits_full / r_k (spec §2.0)."""
    return local_iters * 2.0 * self.F_full / self.c[k] + self.M_full / self.r[k]


def clock_from(time_model):
  """The constants and client profiles of a gas_jax TimeModel (the numbers only)."""
  p = time_model.profiles
  return Clock(p.compute, p.distance, time_model.batch_size, time_model.client_flops,
               time_model.activation_bits, time_model.client_model_bits,
               time_model.full_flops, time_model.full_model_bits)


# --- network forward/backward (the project's own model) ----------------------------------------

_NETS = {}


def net_for(model) -> "Net":
  """One `Net` (hence one set of compilations) per model architecture in the process."""
  key = (model.name, model.split, model.num_classes, model.input_shape)
  if key not in _NETS:
    _NETS[key] = Net(model)
  return _NETS[key]


class Net:
  """Jitted gradients of the oracle's losses through the project's split model."""

  def __init__(self, model):
    assert not model.stateful, "the oracles support stateless models only"
    self.model = model

    def client_fwd(theta, x):
      return model.client_train(theta, x)[0]

    def server_fwd(phi, a):
      return model.server_train(phi, a)[0]

    def la_client_loss(theta, phi, x, y, lp):      # GAS eq. 6: CE(f_s(phi; f_c(theta; x)) + a_k, y)
      a = client_fwd(theta, x)
      return mean_ce(server_fwd(phi, a) + lp[None, :], y), a

    def client_loss(theta, phi, x, y):            # SFL baselines: plain CE, no LA
      a = client_fwd(theta, x)
      return mean_ce(server_fwd(phi, a), y), a

    def server_loss(phi, a, y, valid):           # mean CE over the valid rows
      ce = ce_rows(server_fwd(phi, a), y)
      return jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.sum(valid)

    def full_loss(pair, x, y):                    # FL baselines: the unsplit net
      return mean_ce(server_fwd(pair[1], client_fwd(pair[0], x)), y)

    self.la_client_grad = jax.jit(jax.value_and_grad(la_client_loss, has_aux=True))
    self.client_grad = jax.jit(jax.value_and_grad(client_loss, has_aux=True))
    self.server_grad = jax.jit(jax.value_and_grad(server_loss))
    self.full_grad = jax.jit(jax.value_and_grad(full_loss))


def momentum_trace(opt_state):
  """The momentum buffer (optax trace) in an optax chain state."""
  for s in opt_state:
    if hasattr(s, "trace"):
      return s.trace
  raise AssertionError(f"no momentum trace in {opt_state}")


def small_digits_config(algorithm, iters, clip):
  """configs/digits.py at oracle size: K=6, C=3, E=3, B=8, 5 shards per client, lr 0.05."""
  from configs import digits   # noqa: PLC0415
  c = digits.get_config()
  c.algorithm = algorithm
  c.num_global_iters = iters
  c.clients.num, c.clients.participating = 6, 3
  c.clients.local_iters, c.clients.batch_size = 3, 8
  c.data.shards = 5
  c.optimizer.lr = 0.05
  c.optimizer.clip_norm = clip
  return c


def rel_error(a, b) -> float:
  """Norm-wise relative error of a against b, in float64."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def assert_trees_close(engine, oracle, rel=1e-5, what=""):
  """Every leaf within a norm-wise relative error `rel` (same tree structure)."""
  le, lo = jax.tree_util.tree_leaves(engine), jax.tree_util.tree_leaves(oracle)
  assert len(le) == len(lo), what
  for i, (a, b) in enumerate(zip(le, lo)):
    assert np.shape(a) == np.shape(b), (what, i, np.shape(a), np.shape(b))
    assert rel_error(a, b) <= rel, f"{what} leaf {i}: relative error {rel_error(a, b):.3g}"
