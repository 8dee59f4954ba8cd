"""GAS: Generative Activation-aided Asynchronous Split FL (Yang & Liu, AAAI 2025), REF semantics.

`build(...)` returns pure `init` / `client_step` / `server_step` / `evaluate` functions over
frozen states (`ClientState`, `ServerState`, `ActivationBuffer`). The host scheduler orders the
events (spec §1.3); each has the shape `(state, batch, rng) -> (state, metrics)`:

1. client forward A = f_c(theta_slot; x); A, y and the weight tag enter the activation buffer
   (the engine writes `client_step`'s returned activation at the scheduler's buffer position);
2. client gradient of the logit-adjusted loss CE(f_s(phi; A) + log p_k, y) (eq. 6) through the
   *current* server model phi (phi is not updated by it); SGD step on theta_slot (shared momentum);
3. if the buffer now holds C minibatches: SERVER_UPDATE (spec §1.5) - merge the real rows into the
   per-label statistics (eq. 11-12, `gas_jax.stats`), top every label up to B rows with generated
   activations once all labels have statistics (Algorithm 1), one SGD step on phi (plain CE);
4. if this was the client's E-th step: its model enters the model buffer (uniform 1/C in REF,
   |D_k|-weighted = paper eq. 10); when C models arrived the aggregate replaces theta_glob; the
   slot restarts from the newest theta_glob (a replacement client joins).
"""
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from gas_jax import losses, optim, stats as stats_lib, weighting
from gas_jax.models import layers

tree_map = jax.tree_util.tree_map
DROPOUT_SALT = 0xD0   # the server update's dropout key: fold_in(fold_in(rng, update), salt)


@dataclasses.dataclass(frozen=True)
class GasHParams:
  participating: int            # C: concurrency and both buffer sizes
  batch_size: int               # B
  num_classes: int              # M
  generate: bool = True
  lr: float = 0.01
  lr_decay: str = "none"        # "none" (REF) | "sqrt" (paper: eta_0 / sqrt(t))
  optimizer: str = "sgd"
  momentum: float = 0.9
  weight_decay: float = 5e-4
  clip_norm: float = 10.0
  shared_momentum: bool = True  # REF: one client momentum buffer shared by all clients
  stats_jitter: float = stats_lib.REF_JITTER
  stats_block: int = 16
  stats_method: str = "sqrt"    # "sqrt" (square-root factor, default) | "cholesky" (REF-literal)
  stats_covariance: str = "full"  # "full" | "diag" | "lowrank" (high-dimensional splits)
  stats_rank: int = 64          # rows kept per label by "lowrank"
  stats_refresh_every: int = 1  # "cholesky": refactorise every N server updates (mean exact)
  stats_diag_rule: str = "ref"  # "diag" generation: "ref" (REF's diagonal variant) | "topup"
  keep_last_batch: bool = False   # keep the server's last batch (gradient dissimilarity, Fig. 2a)
  server_chunk: int = 0         # server forward/backward in chunks of this many rows (0: one pass)
  relative_tags: bool = False   # tags relative to a running maximum ("exp"/"poly", `weighting`)
  server_bn_client_steps: bool = True  # REF: client-gradient forwards update phi's BN running stats


@struct.dataclass
class ClientState:
  """Everything on the client side of the split (small: C copies of the client model)."""
  slots: Any             # client params of the C in-flight clients, stacked on axis 0
  global_client: Any     # theta_glob, the newest aggregate
  model_sum: Any         # model buffer: running weighted sum of uploaded client models
  model_weight: jax.Array
  client_opt: Any        # shared (REF) or stacked per slot
  global_iter: jax.Array


@struct.dataclass
class ServerState:
  server: Any            # phi
  server_opt: Any
  stats: stats_lib.GaussianStats
  server_updates: jax.Array
  last_batch: Any = None  # (x, y, valid) of the last server update, for gradient dissimilarity


@struct.dataclass
class ActivationBuffer:
  acts: jax.Array        # [C, B, D]
  labels: jax.Array      # [C, B]
  row_mask: jax.Array    # [C, B] bool (partial minibatches are padded)
  tags: jax.Array        # [C] weight tag of each buffered minibatch
  tag_shift: jax.Array = None  # [C] growth of the tags' reference at each (relative tags only)


@struct.dataclass
class GasState:
  client: ClientState
  server: ServerState
  buffer: ActivationBuffer


@dataclasses.dataclass(frozen=True)
class Algorithm:
  init: Callable
  client_step: Callable    # (ClientState, batch, rng) -> (ClientState, outputs)
  server_step: Callable    # (ServerState, batch, rng) -> (ServerState, metrics)
  evaluate: Callable
  hparams: Any
  cohort_step: Callable = None   # (ClientState, batch[L], rng) -> (ClientState, outputs[L])
  generate: Callable = None      # the server update's statistics and sampling (benchmarks)
  compress: Callable = None      # (ServerState, label) -> ServerState: one factor compression


def _stack(tree, n):
  return tree_map(lambda p: jnp.broadcast_to(p, (n,) + p.shape), tree)


def _index(tree, i):
  return tree_map(lambda p: p[i], tree)


def _set(tree, i, value):
  return tree_map(lambda p, v: p.at[i].set(v), tree, value)


def build(model, hp: GasHParams) -> Algorithm:
  # Chunks give the one-pass numbers only for row-wise server parts: batch statistics need the
  # whole batch, and dropout would draw other masks per chunk (ViT), so those run in one pass.
  if hp.server_chunk and not model.server_rowwise:
    hp = dataclasses.replace(hp, server_chunk=0)
  c, b, m = hp.participating, hp.batch_size, hp.num_classes
  dim = int(np.prod(model.activation_shape))
  bn_update = hp.server_bn_client_steps and model.stateful   # client steps return phi
  tx = optim.make_transform(hp.optimizer, hp.momentum, hp.weight_decay, hp.clip_norm)

  def init(rng) -> GasState:
    theta, phi = model.init(rng)
    client_opt = tx.init(model.trainable(theta))
    client = ClientState(
        slots=_stack(theta, c), global_client=theta,
        model_sum=tree_map(jnp.zeros_like, theta), model_weight=jnp.zeros((), jnp.float32),
        client_opt=client_opt if hp.shared_momentum else _stack(client_opt, c),
        global_iter=jnp.zeros((), jnp.int32))
    if not hp.generate:
      stats = stats_lib.init(m, 1)       # unused placeholder
    elif hp.stats_covariance == "diag":
      stats = stats_lib.init_diag(m, dim)
    elif hp.stats_covariance == "lowrank":
      stats = stats_lib.init_sqrt(m, dim, stats_lib.lowrank_capacity(
          hp.stats_rank, dim, c * b, m, hp.stats_block))
    elif hp.stats_method == "cholesky":
      stats = stats_lib.init(m, dim)
    else:
      stats = stats_lib.init_sqrt(m, dim, stats_lib.sqrt_capacity(dim, c * b, m, hp.stats_block))
    last = None
    if hp.keep_last_batch:
      rows = c * b + (m * b if hp.generate else 0)
      last = (jnp.zeros((rows,) + tuple(model.activation_shape), jnp.float32),
              jnp.zeros((rows,), jnp.int32), jnp.zeros((rows,), bool))
    server = ServerState(server=phi, server_opt=tx.init(model.trainable(phi)), stats=stats, last_batch=last,
                         server_updates=jnp.zeros((), jnp.int32))
    buffer = ActivationBuffer(
        acts=jnp.zeros((c, b, dim), jnp.float32), labels=jnp.zeros((c, b), jnp.int32),
        row_mask=jnp.zeros((c, b), bool), tags=jnp.zeros((c,), jnp.float32),
        tag_shift=jnp.zeros((c,), jnp.float32) if hp.relative_tags else None)
    return GasState(client=client, server=server, buffer=buffer)

  def generate(st, buf: ActivationBuffer, key, server_updates, gen_rows=None, room_made=False):
    """Statistics and generation of a server update (eq. 11-12, Algorithm 1): merges the
    buffer's real rows into the per-label statistics, refreshes what the sampler needs and
    tops every label up to B rows with generated activations once all labels have statistics.

    Returns (stats, (x, y, valid) generated rows, number generated, overflow, info). gen_rows
    None: M*B rows, label y's first B - n_y valid; an int: packed into gen_rows rows (labels in
    order), overflow = more were needed. room_made: the caller already compressed every label
    that needed it (`compress`), so the merge skips `stats.make_room`. info: "fallbacks", the
    labels whose sampler fell back to a substitute (`stats.refresh_factors`, report=True), and
    "real_valid" [C*B], the buffer's rows that enter the server batch: all valid ones, except
    with diagonal statistics under `stats_diag_rule="ref"` (REF's commented-out diagonal
    variant, spec §3.5), where once every label has statistics each label keeps only its
    first B real rows (buffer order), so that every label has exactly B rows; that variant
    also samples mu + sqrt(var + r + 1e-5) eps (`stats.DIAG_SAMPLE_EPS`)."""
    rows = buf.acts.reshape(c * b, dim)
    labels = buf.labels.reshape(-1)
    mask = buf.row_mask.reshape(-1)
    tags = buf.tags
    if hp.relative_tags:    # bring the tags and the stored weights to the newest reference
      tags, factor = weighting.window_weights(buf.tags, buf.tag_shift)
      st = weighting.rescale_stats(st, factor)
    weights = jnp.where(mask, jnp.repeat(tags, b), 0.0)
    st = stats_lib.merge(st, rows, labels, weights, jitter=hp.stats_jitter,
                         block=hp.stats_block,
                         rank=hp.stats_rank if hp.stats_covariance == "lowrank" else 0,
                         room_made=room_made)
    counts = jnp.sum(jax.nn.one_hot(labels, m, dtype=jnp.int32) * mask[:, None], 0)
    all_seen = jnp.all(st.seen)
    # REF builds a sampler for every label with n_y <= B; samples top each label up to B.
    need = (counts <= b) & all_seen
    if hp.stats_refresh_every > 1:   # amortised: stale factors between refreshes
      need &= (server_updates % hp.stats_refresh_every == 0) | ~stats_lib.factored(st)
    st, fallbacks = stats_lib.refresh_factors(st, need, report=True)
    n_gen = jnp.where(all_seen, jnp.clip(b - counts, 0, b), 0)    # label y's first n_gen[y]
    ref_diag = hp.stats_covariance == "diag" and hp.stats_diag_rule == "ref"
    fake = stats_lib.sample(st, key, b, need=n_gen > 0, rows=n_gen,
                            diag_eps=stats_lib.DIAG_SAMPLE_EPS if ref_diag else 0.0)
    real_valid = mask
    if ref_diag:    # each label's first B real rows (REF: label_features[:batchsize])
      onehot = jax.nn.one_hot(labels, m, dtype=jnp.int32) * mask[:, None]
      rank = jnp.take_along_axis(jnp.cumsum(onehot, 0), labels[:, None], 1)[:, 0] - 1
      real_valid = mask & (~all_seen | (rank < b))
    overflow = jnp.zeros((), bool)
    if gen_rows is None:    # M*B rows, masked
      gx = fake.reshape(m * b, dim)
      gy = jnp.repeat(jnp.arange(m, dtype=labels.dtype), b)
      gvalid = (jnp.arange(b)[None, :] < n_gen[:, None]).reshape(-1)
    else:                   # packed: row r is sample j of label gy, labels in order
      ends = jnp.cumsum(n_gen)
      r = jnp.arange(gen_rows)
      gy = jnp.minimum(jnp.searchsorted(ends, r, side="right"), m - 1).astype(labels.dtype)
      gx = fake[gy, jnp.clip(r - (ends - n_gen)[gy], 0, b - 1)]
      gvalid = r < ends[-1]
      overflow = ends[-1] > gen_rows
    return (st, (gx, gy, gvalid), jnp.sum(n_gen), overflow,
            dict(fallbacks=fallbacks, real_valid=real_valid))

  def server_step(state: ServerState, batch, rng):
    """SERVER_UPDATE (spec §1.5). batch: {"buffer": ActivationBuffer, "global_iter": int} and
    optionally "gen_rows" (a static int, from `generated_rows`): the generated activations are
    then packed into that many rows instead of M*B masked ones (the same loss and gradients,
    less forward/backward work); if more were needed, metrics["gen_overflow"] is set.
    "room_made" (static, default False): the statistics' compressions were run beforehand
    (`compress`, from the host: `engine.plan_server_update`); if a label still had no room for
    the merge, metrics["stats_overflow"] is set."""
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
      if room_made and isinstance(st, stats_lib.SqrtStats):
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
      loss, grads = _chunked_ce_grads(model, state.server, x, y, valid, dropout_key, chunk)
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
    return state, dict(server_loss=loss, generated=generated, grad_finite=_finite(grads),
                       gen_overflow=overflow, stats_overflow=no_room, stats_fallbacks=fallbacks)

  def compress(state: ServerState, label) -> ServerState:
    """Compresses (or, "lowrank", truncates) one label's square-root factor, the step that
    `stats.make_room` runs inside the merge (`stats.compress_label`); the runners call it
    from the host for each label that `engine.plan_server_update` finds full, then run
    `server_step` with "room_made"."""
    rank = hp.stats_rank if hp.stats_covariance == "lowrank" else 0
    return state.replace(stats=stats_lib.compress_label(state.stats, label, rank))

  def upload(state: ClientState, slot, theta, agg_weight, up, aggregate):
    """Where `up`: theta (the slot's model after its step) goes into the model buffer and, where
    also `aggregate`, the buffer is averaged into the new global client model (spec §1.4); the
    slot then restarts from the newest global model. Written with selects, not `lax.cond`, so
    a cohort's scan over its events has no branch (on a GPU every branch in a loop waits for
    the host); the selected values are computed exactly as by a branch."""
    sel = lambda c: (lambda new, old: jnp.where(c, new, old))    # noqa: E731
    model_sum = tree_map(sel(up), tree_map(lambda s, p: s + agg_weight * p, state.model_sum,
                                           theta), state.model_sum)
    model_weight = jnp.where(up, state.model_weight + agg_weight, state.model_weight)
    flush = up & aggregate
    safe_weight = jnp.where(flush, model_weight, 1.0)
    glob = tree_map(sel(flush), tree_map(lambda s: s / safe_weight, model_sum),
                    state.global_client)
    model_sum = tree_map(sel(flush), tree_map(jnp.zeros_like, model_sum), model_sum)
    model_weight = jnp.where(flush, jnp.zeros_like(model_weight), model_weight)
    state = state.replace(slots=_set(state.slots, slot, tree_map(sel(up), glob, theta)),
                          model_sum=model_sum, model_weight=model_weight, global_client=glob,
                          global_iter=state.global_iter + flush.astype(state.global_iter.dtype))
    if not hp.shared_momentum:
      opt = tree_map(sel(up), tx.init(model.trainable(glob)), _index(state.client_opt, slot))
      state = state.replace(client_opt=_set(state.client_opt, slot, opt))
    return state

  def client_grads(theta, batch, rng):
    """Client forward, logit-adjusted loss through the current phi (eq. 6), gradient wrt the
    client's parameters. Both forwards run in training mode (REF): BatchNorm on the batch's
    statistics, dropout keyed by `rng`; the client's running statistics are updated (returned
    in theta). phi's parameters are read-only here; its BatchNorm running statistics after this
    forward are returned too (REF updates them on every client batch, spec §1.5, §6.16;
    `server_bn_client_steps`)."""
    def loss_fn(p):
      a, th = model.client_train(model.with_trainable(theta, p), batch["x"],
                                 jax.random.fold_in(rng, 0), batch["mask"])
      logits, phi = model.server_train(batch["server"], a, jax.random.fold_in(rng, 1),
                                       batch["mask"])
      loss = losses.logit_adjusted_ce(logits, batch["y"], batch["mask"], batch["log_prior"])
      return loss, (a, th, phi)

    (loss, (a, theta, phi)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        model.trainable(theta))
    return loss, jax.lax.stop_gradient(a).reshape(b, dim), grads, theta, phi

  def apply_update(state: ClientState, batch, theta, grads):
    """SGD step on the slot's model (shared or per-slot momentum), then the upload (§1.4)."""
    slot = batch["slot"]
    lr = optim.learning_rate(hp.lr, state.global_iter, hp.lr_decay)
    params = model.trainable(theta)
    if hp.shared_momentum:
      params, client_opt = optim.apply(tx, params, grads, state.client_opt, lr)
    else:
      params, opt_k = optim.apply(tx, params, grads, _index(state.client_opt, slot), lr)
      client_opt = _set(state.client_opt, slot, opt_k)
    theta = model.with_trainable(theta, params)
    state = state.replace(client_opt=client_opt)
    return upload(state, slot, theta, batch["agg_weight"], batch["upload"], batch["aggregate"])

  def client_step(state: ClientState, batch, rng):
    """One client local step; batch holds x, y, mask, log_prior, slot, upload flags and the
    current server params ("server"). Returns the activation for the server's buffer."""
    theta = _index(state.slots, batch["slot"])
    loss, act, grads, theta, phi = client_grads(theta, batch, rng)
    state = apply_update(state, batch, theta, grads)
    out = dict(act=act, client_loss=loss, grad_finite=_finite(grads))
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
    thetas = _index(state.slots, batch["slot"])
    per_event = {k: v for k, v in batch.items() if k != "server"}
    keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(batch["event_id"])
    loss, act, grads, thetas, phis = jax.vmap(
        lambda th, ev, k: client_grads(th, dict(ev, server=batch["server"]), k))(
            thetas, per_event, keys)
    phi0 = batch["server"]

    def body(carry, xs):
      st, phi = carry
      ev, th, g, phi_i = xs
      new = (apply_update(st, ev, th, g), phi)
      if bn_update:   # event i's forward from phi0 gave m r0 + (1-m) s_i; chain them in order
        new = (new[0], tree_map(lambda p_i, r, r0: p_i + layers.BN_MOMENTUM * (r - r0),
                                phi_i, phi, phi0))
      return tree_map(lambda n, o: jnp.where(ev["valid"], n, o), new, (st, phi)), None

    # Unrolled (L is a static bucket size): no loop for a GPU to drive from the host.
    (state, phi), _ = jax.lax.scan(body, (state, phi0), (per_event, thetas, grads, phis),
                                   unroll=True)
    finite = jax.vmap(_finite)(grads) | ~batch["valid"]
    out = dict(act=act, client_loss=loss, grad_finite=finite)
    if bn_update:
      out["server"] = phi
    return state, out

  def evaluate(state: GasState, x, y, mask):
    """Sums of correct predictions and CE over the masked rows, with theta_glob and phi."""
    logits = model.server_apply(state.server.server,
                                model.client_apply(state.client.global_client, x))
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)[:, 0]
    correct = jnp.argmax(logits, -1) == y
    return jnp.sum(correct * mask), jnp.sum(nll * mask)

  return Algorithm(init=init, client_step=client_step, server_step=server_step,
                   evaluate=evaluate, hparams=hp, cohort_step=cohort_step, generate=generate,
                   compress=compress)


def _chunked_ce_grads(model, phi, x, y, valid, key, chunk: int):
  """The masked mean CE over all rows and its gradient, computed chunk by chunk (`chunk` rows
  each: sums of per-chunk CE and gradients over the number of valid rows): the same numbers as
  one pass for models without batch statistics, with each chunk's im2col buffers small enough
  for the CPU's caches (AlexNet L2's server update ~20 % faster with 32-row chunks).

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


def _finite(tree):
  return jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(tree)]))


def generated_rows(hp: GasHParams, labels, row_mask, seen) -> int:
  """Host side: the packed size for a server update's generated activations (`server_step`'s
  "gen_rows"), from the buffer's labels [C, B] / row_mask and the labels seen before it: the
  smallest of `generated_row_sizes` that holds sum_y max(B - n_y, 0) (0 before every label has
  statistics)."""
  m, b = hp.num_classes, hp.batch_size
  labels, row_mask = np.asarray(labels).reshape(-1), np.asarray(row_mask).reshape(-1)
  counts = np.bincount(labels[row_mask], minlength=m)[:m]
  total = 0
  if np.all(np.asarray(seen) | (counts > 0)):
    total = int(np.sum(np.clip(b - counts, 0, b)))
  return next(size for size in generated_row_sizes(hp) if size >= total)


def generated_row_sizes(hp: GasHParams) -> list:
  """Every packed size `generated_rows` can return. One pass: multiples of ceil(M*B/5) up to
  M*B (at most 6 sizes, so at most 6 compilations). In chunks (`server_chunk`): M*B only, as
  the chunked forward/backward skips the chunks past the last generated row anyway."""
  m, b = hp.num_classes, hp.batch_size
  if hp.server_chunk:
    return [m * b]
  unit = -(-m * b // 5)
  return sorted({min(k * unit, m * b) for k in range(6)})


def hparams_from_config(config, num_classes: int, generate: bool) -> GasHParams:
  return GasHParams(
      participating=config.clients.participating, batch_size=config.clients.batch_size,
      num_classes=num_classes, generate=generate, lr=config.optimizer.lr,
      lr_decay=config.optimizer.decay, optimizer=config.optimizer.name,
      momentum=config.optimizer.momentum, weight_decay=config.optimizer.weight_decay,
      clip_norm=config.optimizer.clip_norm,
      shared_momentum=config.clients.momentum == "shared",
      stats_jitter=config.stats.jitter, stats_block=config.stats.block,
      stats_method=config.stats.method, stats_covariance=config.stats.covariance,
      stats_rank=config.stats.rank, stats_refresh_every=config.stats.refresh_every,
      stats_diag_rule=config.stats.diag_rule,
      keep_last_batch=bool(config.grad_dissimilarity.enabled),
      server_chunk=server_chunk(config),
      relative_tags=config.weighting.fn in weighting.RELATIVE,
      server_bn_client_steps=bool(config.model.server_bn_client_steps))


def server_chunk(config) -> int:
  """execution.server_chunk: -1 = the backend's best (32 rows on the CPU, where smaller im2col
  buffers stay in cache; one pass on accelerators), 0 = one pass, N = chunks of N rows."""
  n = config.execution.server_chunk
  if n < 0:
    return 32 if jax.default_backend() == "cpu" else 0
  return n
