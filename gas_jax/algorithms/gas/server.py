"""The GAS server update (paper eq. 5, Algorithm 1 lines 8-10; spec §1.5).

SERVER_UPDATE runs when the activation buffer holds Q_s minibatches (REF: C): the real rows are merged
into the per-label statistics and topped up with generated activations (`generation`), then phi
takes one optimiser step on the plain CE of real and generated rows (eq. 5). `compress` is the
statistics' compression as a step of its own, which the runners call from the host
(`planning`) so that the server update holds no loop over the factor.
"""
import jax
import jax.numpy as jnp

from gas_jax import losses, optim, weighting
from gas_jax import stats as stats_lib
from gas_jax.algorithms.gas import generation
from gas_jax.algorithms.gas.state import GasHParams, ServerState, buffer_size, finite

tree_map = jax.tree_util.tree_map
DROPOUT_SALT = 0xD0   # the server update's dropout key: fold_in(fold_in(rng, update), salt)


def make_server(model, hp: GasHParams, tx, dim: int):
  """(server_step, generate, compress) for `model`'s server part; tx: the optimiser."""
  c, b = buffer_size(hp), hp.batch_size    # Q_s minibatches (REF: C)
  generate = generation.make_generate(hp, dim)

  def server_step(state: ServerState, batch, rng):
    """SERVER_UPDATE (spec §1.5). batch: {"buffer": ActivationBuffer, "global_iter": int} and
    optionally "gen_rows" (a static int, from `generated_rows`): the generated activations are
    then packed into that many rows instead of M*B masked ones (the same loss and gradients,
    less forward/backward work); if more were needed, metrics["gen_overflow"] is set.
    "room_made" (static, default False): the statistics' compressions were run beforehand
    (`compress`, from the host: `planning.plan_server_update`); if a label still had no room
    for the merge, metrics["stats_overflow"] is set."""
    buf = batch["buffer"]
    x = buf.acts.reshape(c * b, dim)
    y = buf.labels.reshape(-1)
    valid = buf.row_mask.reshape(-1)
    generated = jnp.zeros((), jnp.int32)
    overflow = jnp.zeros((), bool)
    st = state.stats
    no_room = jnp.zeros((), bool)
    fallbacks = jnp.zeros((), jnp.int32)
    if hp.generate:
      gen_rows = None if hp.keep_last_batch else batch.get("gen_rows")
      room_made = batch.get("room_made", False)
      if room_made and stats_lib.compressible(st):
        tags = (weighting.window_weights(buf.tags, buf.tag_shift)[0] if hp.relative_tags
                else buf.tags)
        weights = jnp.where(valid, jnp.repeat(tags, b), 0.0)
        no_room = jnp.any(stats_lib.overflowing(st.used, st.seen, y, weights, hp.stats_block,
                                                st.rows.shape[1]))
      st, (gx, gy, gvalid), generated, overflow, info = generate(
          st, buf, jax.random.fold_in(rng, state.server_updates), state.server_updates,
          gen_rows, room_made)
      valid, fallbacks = info["real_valid"], info["fallbacks"]
      x = jnp.concatenate([x, gx], 0)
      y = jnp.concatenate([y, gy], 0)
      valid = jnp.concatenate([valid, gvalid], 0)
    x = x.reshape((-1,) + tuple(model.activation_shape))

    dropout_key = jax.random.fold_in(jax.random.fold_in(rng, state.server_updates), DROPOUT_SALT)
    chunk = hp.server_chunk
    if chunk and x.shape[0] > chunk:
      loss, grads = chunked_ce_grads(model, state.server, x, y, valid, dropout_key, chunk)
      phi = state.server
    else:
      def loss_fn(p):
        logits, phi = model.server_train(model.with_trainable(state.server, p), x, dropout_key,
                                         valid)
        return losses.masked_mean_ce(logits, y, valid), phi

      (loss, phi), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          model.trainable(state.server))
    lr = optim.learning_rate(hp.lr, batch["global_iter"], hp.lr_decay)
    params, server_opt = optim.apply(tx, model.trainable(phi), grads, state.server_opt, lr)
    phi = model.with_trainable(phi, params)
    state = state.replace(server=phi, server_opt=server_opt, stats=st,
                          server_updates=state.server_updates + 1)
    if hp.keep_last_batch:
      state = state.replace(last_batch=(x, y, valid))
    return state, dict(server_loss=loss, generated=generated, grad_finite=finite(grads),
                       gen_overflow=overflow, stats_overflow=no_room, stats_fallbacks=fallbacks)

  def compress(state: ServerState, label) -> ServerState:
    """Compresses (or, "lowrank", truncates) one label's square-root factor, the step that
    `stats.make_room` runs inside the merge (`stats.compress_label`); the runners call it
    from the host for each label that `planning.plan_server_update` finds full, then run
    `server_step` with "room_made"."""
    return state.replace(stats=stats_lib.compress_label(state.stats, label,
                                                        generation.merge_rank(hp)))

  return server_step, generate, compress


def chunked_ce_grads(model, phi, x, y, valid, key, chunk: int):
  """The masked mean CE over all rows and its gradient, computed chunk by chunk (`chunk` rows
  each: sums of per-chunk CE and gradients over the number of valid rows): the same numbers as
  one pass for models without batch statistics, with each chunk's im2col buffers small enough
  for the CPU's caches (docs/benchmarks.md, "CPU formulations").

  The loop stops after the last chunk holding a valid row: the chunks past it would only add
  exact zeros. So rows packed at the front of a large static block cost only what they use,
  and the generated rows need one compiled size (`generated_row_sizes`). Only used for
  `model.server_rowwise` server parts (`build` turns chunks off otherwise): with dropout or batch
  statistics the chunks would draw other masks or statistics than one pass."""
  n = x.shape[0]
  k = -(-n // chunk)
  pad = k * chunk - n
  if pad:
    x = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)], 0)
    y = jnp.concatenate([y, jnp.zeros((pad,), y.dtype)], 0)
    valid = jnp.concatenate([valid, jnp.zeros((pad,), bool)], 0)
  params = model.trainable(phi)
  xs, ys, vs = (x.reshape((k, chunk) + x.shape[1:]), y.reshape(k, chunk),
                valid.reshape(k, chunk))
  active = jnp.max(jnp.where(jnp.any(vs, 1), jnp.arange(1, k + 1), 0))   # chunks to visit

  def ce_sum(p, xc, yc, vc, i):
    logits, _ = model.server_train(model.with_trainable(phi, p), xc, jax.random.fold_in(key, i),
                                   vc)
    return losses.masked_sum_ce(logits, yc, vc)

  def body(i, acc):
    total, g = jax.value_and_grad(ce_sum)(params, xs[i], ys[i], vs[i], i)
    return tree_map(jnp.add, acc, (total, g))

  init = (jnp.zeros((), jnp.float32), tree_map(jnp.zeros_like, params))
  total, grads = jax.lax.fori_loop(0, active, body, init)
  count = jnp.maximum(jnp.sum(valid.astype(jnp.float32)), 1.0)
  return total / count, tree_map(lambda g: g / count, grads)
