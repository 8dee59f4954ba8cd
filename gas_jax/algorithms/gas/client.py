"""The GAS client side (paper eq. 3, 6-10, Algorithm 2; spec §1.3, §1.4, §1.7).

A client step runs the client forward A = f_c(theta_slot; x) (eq. 3), whose activation the
engine writes into the activation buffer (eq. 4); takes the gradient of the logit-adjusted loss
CE(f_s(phi; A) + log p_k, y) (eq. 6) through the *current* server model phi (read-only here),
i.e. eq. (7)-(8); one optimiser step on theta_slot (REF: one momentum buffer shared by all
clients, spec §1.7); and, after the client's E-th step, the upload into the model buffer
(eq. 9; uniform 1/C in REF, |D_k|-weighted = paper eq. 10), whose average replaces theta_glob
when C models arrived (spec §1.4). `cohort_step` runs L independent client steps in one call.

With `hp.privacy` (paper eq. 44, `gas_jax.privacy.regularisers`) the client loss gains the
regulariser gamma R and, for "inversion", each slot's simulated decoder takes one step per client
step and travels through the model buffer with theta (`ClientState.decoder`).
"""
import jax
import jax.numpy as jnp

from gas_jax import losses, optim
from gas_jax.algorithms.gas.state import ClientState, GasHParams, finite, index, set_at
from gas_jax.models import layers
from gas_jax.privacy import regularisers

tree_map = jax.tree_util.tree_map


def make_client(model, hp: GasHParams, tx, dim: int):
  """(client_step, cohort_step, objective, restart_slot) for `model`'s client part; tx: the
  optimiser."""
  b = hp.batch_size
  bn_update = hp.server_bn_client_steps and model.stateful   # client steps return phi
  reg = regularisers.make(model, hp.privacy)       # None: no regulariser (REF)
  inversion = reg is not None and reg.inversion    # slots carry simulated decoders
  sel = lambda c: (lambda new, old: jnp.where(c, new, old))    # noqa: E731

  def buffer_in(total, glob, new, agg_weight, up, flush, safe_weight):
    """Where `up`, `new` enters the model buffer `total`; where `flush`, the buffer's average
    replaces `glob` and the buffer empties. Returns (total, glob, the slot's next params)."""
    total = tree_map(sel(up), tree_map(lambda s, p: s + agg_weight * p, total, new), total)
    glob = tree_map(sel(flush), tree_map(lambda s: s / safe_weight, total), glob)
    total = tree_map(sel(flush), tree_map(jnp.zeros_like, total), total)
    return total, glob, tree_map(sel(up), glob, new)

  def upload(state: ClientState, slot, theta, dec, agg_weight, up, aggregate):
    """Where `up`: theta (the slot's model after its step) goes into the model buffer and, where
    also `aggregate`, the buffer is averaged into the new global client model (spec §1.4); the
    slot then restarts from the newest global model. Written with selects, not `lax.cond`, so
    a cohort's scan over its events has no branch (on a GPU every branch in a loop waits for
    the host); the selected values are computed exactly as by a branch. `dec` (privacy
    "inversion"): the slot's decoder and Adam state after its step, buffered with theta's weight
    into the global decoder; a restarting slot takes the global decoder and a fresh Adam state."""
    model_weight = jnp.where(up, state.model_weight + agg_weight, state.model_weight)
    flush = up & aggregate
    safe_weight = jnp.where(flush, model_weight, 1.0)
    model_sum, glob, theta = buffer_in(state.model_sum, state.global_client, theta, agg_weight,
                                       up, flush, safe_weight)
    model_weight = jnp.where(flush, jnp.zeros_like(model_weight), model_weight)
    state = state.replace(slots=set_at(state.slots, slot, theta),
                          model_sum=model_sum, model_weight=model_weight, global_client=glob,
                          global_iter=state.global_iter + flush.astype(state.global_iter.dtype))
    if not hp.shared_momentum:
      opt = tree_map(sel(up), tx.init(model.trainable(glob)), index(state.client_opt, slot))
      state = state.replace(client_opt=set_at(state.client_opt, slot, opt))
    if inversion:
      d = state.decoder
      total, glob_dec, params = buffer_in(d.total, d.global_, dec[0], agg_weight, up, flush,
                                          safe_weight)
      opt = tree_map(sel(up), reg.init_opt(glob_dec), dec[1])
      state = state.replace(decoder=d.replace(
          slots=set_at(d.slots, slot, params), opt=set_at(d.opt, slot, opt), global_=glob_dec,
          total=total))
    return state

  def slot_decoder(state: ClientState, slot):
    """(decoder params, Adam state) of `slot` (or of each of `slot` [L]); None without one."""
    return (index(state.decoder.slots, slot), index(state.decoder.opt, slot)) if inversion \
        else None

  def objective(p, theta, batch, rng, dec=None):
    """The client's loss at trainable parameters p (theta: the rest, e.g. running statistics):
    the logit-adjusted CE through the current phi = batch["server"] (eq. 6) plus, with a
    regulariser, gamma R (eq. 44) with the decoder `dec` (params) frozen. Returns (loss, (CE,
    activation, theta after the forward, phi after the forward, R or None))."""
    a, th = model.client_train(model.with_trainable(theta, p), batch["x"],
                               jax.random.fold_in(rng, 0), batch["mask"])
    logits, phi = model.server_train(batch["server"], a, jax.random.fold_in(rng, 1),
                                     batch["mask"])
    loss = losses.logit_adjusted_ce(logits, batch["y"], batch["mask"], batch["log_prior"],
                                    hp.la_tau)
    if reg is None:
      return loss, (loss, a, th, phi, None)
    penalty, score = reg.penalty(dec, batch["x"], a, batch["mask"])
    return loss + penalty, (loss, a, th, phi, score)

  def client_grads(theta, batch, rng, dec=None):
    """Client forward, logit-adjusted loss through the current phi (eq. 6), gradient wrt the
    client's parameters. Both forwards run in training mode (REF): BatchNorm on the batch's
    statistics, dropout keyed by `rng`; the client's running statistics are updated (returned
    in theta). phi's parameters are read-only here; its BatchNorm running statistics after this
    forward are returned too (REF updates them on every client batch, spec §1.5, §6.16;
    `server_bn_client_steps`). With a regulariser the loss gains gamma R (eq. 44; the reported
    loss stays the CE) and `dec` (the slot's decoder, Adam state) takes its step
    (`regularisers`). Returns (loss, act, grads, theta, phi, score R or None, dec)."""
    (_, (loss, a, theta, phi, score)), grads = jax.value_and_grad(objective, has_aux=True)(
        model.trainable(theta), theta, batch, rng, None if dec is None else dec[0])
    if inversion:
      dec = reg.decoder_step(*dec, batch["x"], a, batch["mask"])
    return loss, jax.lax.stop_gradient(a).reshape(b, dim), grads, theta, phi, score, dec

  def apply_update(state: ClientState, batch, theta, grads, dec=None):
    """SGD step on the slot's model (shared or per-slot momentum), then the upload (§1.4)."""
    slot = batch["slot"]
    lr = optim.learning_rate(hp.lr, state.global_iter, hp.lr_decay)
    params = model.trainable(theta)
    if hp.shared_momentum:
      params, client_opt = optim.apply(tx, params, grads, state.client_opt, lr)
    else:
      params, opt_k = optim.apply(tx, params, grads, index(state.client_opt, slot), lr)
      client_opt = set_at(state.client_opt, slot, opt_k)
    theta = model.with_trainable(theta, params)
    state = state.replace(client_opt=client_opt)
    return upload(state, slot, theta, dec, batch["agg_weight"], batch["upload"],
                  batch["aggregate"])

  def client_step(state: ClientState, batch, rng):
    """One client local step; batch holds x, y, mask, log_prior, slot, upload flags and the
    current server params ("server"). Returns the activation for the server's buffer."""
    theta = index(state.slots, batch["slot"])
    loss, act, grads, theta, phi, score, dec = client_grads(
        theta, batch, rng, slot_decoder(state, batch["slot"]))
    state = apply_update(state, batch, theta, grads, dec)
    out = dict(act=act, client_loss=loss, grad_finite=finite(grads))
    if score is not None:
      out["privacy_score"] = score
    if bn_update:
      out["server"] = phi
    return state, out

  def cohort_step(state: ClientState, batch, rng):
    """A cohort of L independent client steps (distinct slots, same phi) in one call.

    Gradients are computed for all L clients at once (vmapped; the server forward/backward runs
    on the cohort's activations with the shared phi); the optimiser updates - a linear
    recurrence through REF's shared momentum buffer - and the uploads then follow in event order
    (a scan over cheap elementwise work), so the result equals L sequential `client_step`s.
    batch: per-event arrays with leading axis L plus "valid" [L]; "server" is shared. Event i's
    key is fold_in(rng, event_id_i), the key `client_step` gets from the engine.
    """
    thetas = index(state.slots, batch["slot"])
    per_event = {k: v for k, v in batch.items() if k != "server"}
    keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(batch["event_id"])
    loss, act, grads, thetas, phis, score, decs = jax.vmap(
        lambda th, ev, k, d: client_grads(th, dict(ev, server=batch["server"]), k, d))(
            thetas, per_event, keys, slot_decoder(state, batch["slot"]))
    phi0 = batch["server"]

    def body(carry, xs):
      st, phi = carry
      ev, th, g, phi_i, dec = xs
      new = (apply_update(st, ev, th, g, dec), phi)
      if bn_update:   # event i's forward from phi0 gave m r0 + (1-m) s_i; chain them in order
        new = (new[0], tree_map(lambda p_i, r, r0: p_i + layers.BN_MOMENTUM * (r - r0),
                                phi_i, phi, phi0))
      return tree_map(lambda n, o: jnp.where(ev["valid"], n, o), new, (st, phi)), None

    # Unrolled (L is a static bucket size): no loop for a GPU to drive from the host.
    (state, phi), _ = jax.lax.scan(body, (state, phi0), (per_event, thetas, grads, phis, decs),
                                   unroll=True)
    finite_grads = jax.vmap(finite)(grads) | ~batch["valid"]
    out = dict(act=act, client_loss=loss, grad_finite=finite_grads)
    if score is not None:
      out["privacy_score"] = score
    if bn_update:
      out["server"] = phi
    return state, out

  def restart_slot(state: ClientState, slot):
    """The slot restarts from the newest global model as after an upload, but nothing enters
    the model buffer (weight 0): a lost model's slot refilled (issue #29, docs/scenarios.md)."""
    return upload(state, slot, index(state.slots, slot), slot_decoder(state, slot),
                  jnp.zeros((), jnp.float32), jnp.bool_(True), jnp.bool_(False))

  return client_step, cohort_step, objective, restart_slot
