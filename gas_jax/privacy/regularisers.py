"""Training against the split-learning leak: the client-loss regularisers of paper eq. (44).

    f_k(w_c) = l(w_s; h(w_c; D_k)) + gamma R(L(w_v; h(w_c; D_k)), D_k)        (eq. 44)

Two choices of the score R (`privacy.method`, spec/privacy.md §2-3), added to the client loss of
every split method (GAS and GAS without generation: `gas_jax.algorithms.gas.client`;
MiniBatch-SFL and S2FL: `gas_jax.algorithms.sfl`). The server's loss is unchanged: the
regulariser is the client's.

- "nopeek" (Vepakomma et al. 2020): R = DCOR(x, z), the distance correlation of the flattened
  input batch and its activations, over the batch's real rows (padded rows are masked out:
  `masked_distance_correlation`). No extra state.
- "inversion" (ResSFL, Li et al. 2022, option `gan_adv_step1`): a simulated attacker, the
  decoder w_v = res_normN{N}C{C} (`gas_jax.privacy.decoder`), reconstructs the images from the
  activations; R = max(SSIM(g(z), x01) - tau, 0) with the decoder frozen (stop_gradient on its
  parameters, so only the client model receives this gradient), x01 = the batch in [0, 1]
  (`images.to_unit` with the train set's range, computed once when the runner is built). Then,
  with the client frozen (stop_gradient on z), ONE Adam step (lr `privacy.decoder_lr`) on the
  decoder's loss -SSIM(g(z), x01). Both use the decoder as it was before the step and the
  activations of this step's forward, so one client step reads one decoder and writes one.
  ResSFL takes the decoder step first and pre-trains the decoder for ~30 epochs; neither is done
  here (the decoder starts at its initialisation and trains along).

Where the simulated decoder lives: like the client model, so that each client's steps depend
only on its own state (cohorts stay independent and vmappable, and the decoder is checkpointed
and resumed with everything else). In GAS every in-flight slot has its own decoder copy and Adam
state (`GasDecoders`, next to theta's slots in `ClientState.decoder`); a slot that restarts from
theta_glob restarts from the global decoder with a fresh Adam state, its uploaded copy enters the
model buffer with the client model's weight (eq. 9-10) and the buffer's average replaces the
global decoder when theta_glob is replaced. In MiniBatch-SFL and S2FL each selected client trains
a copy of the global decoder (fresh Adam state) along its client model, and the copies are
averaged with the client models' weights (`SflState.decoder`). With `method="none"` none of this
exists (the states hold None), so nothing changes for REF.
"""
import dataclasses
from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from gas_jax.privacy import decoder as decoder_lib
from gas_jax.privacy import images, similarity
from gas_jax.privacy.dcor import pairwise_distances

DECODER_SALT = 0xDEC   # the decoder's initialisation key: fold_in(model init key, DECODER_SALT)
EPS = 1e-7


@dataclasses.dataclass(frozen=True)
class PrivacyHParams:
  """Static settings of the regulariser (hashable: part of the jitted steps' hyperparameters)."""
  method: str                 # "inversion" | "nopeek"
  gamma: float = 0.3
  tau: float = 0.5
  decoder_blocks: int = 4
  decoder_channels: int = 64
  decoder_lr: float = 1e-3
  lo: Tuple[float, ...] = (0.0,)   # per-channel range of the normalised train images
  hi: Tuple[float, ...] = (1.0,)


def from_config(config, dataset) -> Optional[PrivacyHParams]:
  """The run's privacy settings, None for `privacy.method="none"` (or no privacy section).
  The image range is read from `dataset.x_train` (`images.image_range`) for "inversion"."""
  p = config.get("privacy")
  if p is None or p.method == "none":
    return None
  lo, hi = (0.0,), (1.0,)
  if p.method == "inversion":
    lo, hi = (tuple(float(v) for v in a) for a in images.image_range(dataset))
  return PrivacyHParams(method=p.method, gamma=float(p.gamma), tau=float(p.tau),
                        decoder_blocks=int(p.decoder_blocks),
                        decoder_channels=int(p.decoder_channels),
                        decoder_lr=float(p.decoder_lr), lo=lo, hi=hi)


@struct.dataclass
class GasDecoders:
  """GAS's simulated decoders (method "inversion"), laid out like theta in `ClientState`."""
  slots: Any      # decoder params of the C in-flight slots, stacked on axis 0
  opt: Any        # their Adam states, stacked on axis 0
  global_: Any    # the global decoder (the model buffer's last average)
  total: Any      # model buffer: running weighted sum of the uploaded decoders


def masked_mean(v, mask):
  m = mask.astype(v.dtype)
  return jnp.sum(v * m) / jnp.maximum(jnp.sum(m), 1.0)


def masked_distance_correlation(x, z, mask, eps: float = EPS):
  """DCOR of the rows of x and z where `mask` (`dcor.distance_correlation` of x[mask], z[mask],
  with the rows weighted 0/1 so that the shapes stay static under jit)."""
  n = x.shape[0]
  x = jnp.reshape(x.astype(jnp.float32), (n, -1))
  z = jnp.reshape(z.astype(jnp.float32), (n, -1))
  w = mask.astype(jnp.float32)
  cnt = jnp.maximum(jnp.sum(w), 1.0)
  ww = w[:, None] * w[None, :]

  def centred(a):
    row = jnp.sum(a * w[None, :], axis=1) / cnt
    return a - row[:, None] - row[None, :] + jnp.sum(a * ww) / cnt ** 2

  A = centred(pairwise_distances(x, eps))
  B = centred(pairwise_distances(z, eps))
  dcov2 = jnp.sum(A * B * ww) / cnt ** 2
  r2 = jnp.maximum(dcov2, 0.0) / jnp.sqrt(jnp.sum(A * A * ww) / cnt ** 2
                                          * jnp.sum(B * B * ww) / cnt ** 2 + eps ** 2)
  pos = r2 > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, r2, 1.0)), 0.0)


class Regulariser:
  """The regulariser of one run: `penalty` (in the client loss) and, for "inversion", the
  decoder's initialisation and its one step per client step."""

  def __init__(self, model, hp: PrivacyHParams):
    self.hp = hp
    self.inversion = hp.method == "inversion"
    if self.inversion:
      _, self._init, self._apply = decoder_lib.make_decoder(
          model.activation_shape, model.input_shape, hp.decoder_blocks, hp.decoder_channels)
      self.tx = optax.adam(hp.decoder_lr)

  def init_decoder(self, model_key):
    """(decoder params, fresh Adam state), from the model's initialisation key."""
    params = self._init(jax.random.fold_in(model_key, DECODER_SALT))
    return params, self.tx.init(params)

  def init_opt(self, params):
    return self.tx.init(params)

  def _ssim(self, dec, a, x, mask):
    x01 = images.to_unit(x, jnp.asarray(self.hp.lo), jnp.asarray(self.hp.hi))
    return masked_mean(similarity.ssim_per_image(self._apply(dec, a), x01), mask)

  def penalty(self, dec, x, a, mask):
    """(gamma R, R) for the client loss; gradients reach `a` (the client model) only."""
    if self.inversion:
      score = self._ssim(jax.lax.stop_gradient(dec), a, x, mask)
      return self.hp.gamma * jnp.maximum(score - self.hp.tau, 0.0), score
    score = masked_distance_correlation(x, a, mask)
    return self.hp.gamma * score, score

  def decoder_step(self, dec, opt, x, a, mask):
    """One Adam step of the decoder on -SSIM(g(z), x01), the client frozen (z constant)."""
    a = jax.lax.stop_gradient(a)
    grads = jax.grad(lambda d: -self._ssim(d, a, x, mask))(dec)
    updates, opt = self.tx.update(grads, opt, dec)
    return optax.apply_updates(dec, updates), opt


def make(model, hp: Optional[PrivacyHParams]) -> Optional[Regulariser]:
  """The run's `Regulariser`, or None when the method is "none" (`hp` None)."""
  return None if hp is None else Regulariser(model, hp)
