"""`build`: GAS (Yang & Liu, AAAI 2025) with REF semantics as pure functions over frozen states.

`build(model, hp)` returns an `Algorithm` of `init` / `client_step` / `cohort_step` /
`server_step` / `compress` (evaluation: `gas_jax.evaluation`). The host scheduler orders the events (spec §1.3); each
has the shape `(state, batch, rng) -> (state, metrics)`:

1. client forward A = f_c(theta_slot; x) (eq. 3); A, y and the weight tag enter the activation
   buffer (eq. 4; the engine writes `client_step`'s returned activation at the scheduler's
   buffer position);
2. client gradient of the logit-adjusted loss CE(f_s(phi; A) + log p_k, y) (eq. 6) through the
   *current* server model phi (phi is not updated by it); SGD step on theta_slot (shared
   momentum; `client`);
3. if the buffer now holds Q_s minibatches (REF: C): SERVER_UPDATE (spec §1.5) - merge the real rows into
   the per-label statistics (eq. 11-12, `gas_jax.stats`), top every label up to B rows with
   generated activations once all labels have statistics (Algorithm 1), one SGD step on phi
   (plain CE, eq. 5; `server`, `generation`);
4. if this was the client's E-th step: its model enters the model buffer (eq. 9; uniform 1/C in
   REF, |D_k|-weighted = paper eq. 10); when Q_c models arrived (REF: C) the aggregate replaces theta_glob;
   the slot restarts from the newest theta_glob (a replacement client joins).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gas_jax import optim
from gas_jax.algorithms.gas import client, generation, server
from gas_jax.algorithms.gas.state import (ActivationBuffer, Algorithm, ClientState, GasHParams,
                                          GasState, ServerState, buffer_size, gen_samples,
                                          stack)
from gas_jax.privacy import regularisers

tree_map = jax.tree_util.tree_map


def build(model, hp: GasHParams) -> Algorithm:
  # Chunks give the one-pass numbers only for row-wise server parts: batch statistics need the
  # whole batch, and dropout would draw other masks per chunk (ViT), so those run in one pass.
  if hp.server_chunk and not model.server_rowwise:
    hp = dataclasses.replace(hp, server_chunk=0)
  c, b, m = hp.participating, hp.batch_size, hp.num_classes
  q = buffer_size(hp)         # Q_s (REF: C)
  dim = int(np.prod(model.activation_shape))
  tx = optim.make_transform(hp.optimizer, hp.momentum, hp.weight_decay, hp.clip_norm)
  client_step, cohort_step, objective, restart_slot = client.make_client(model, hp, tx, dim)
  server_step, generate, compress = server.make_server(model, hp, tx, dim)
  reg = regularisers.make(model, hp.privacy)

  def init(rng) -> GasState:
    theta, phi = model.init(rng)
    client_opt = tx.init(model.trainable(theta))
    client_state = ClientState(
        slots=stack(theta, c), global_client=theta,
        model_sum=tree_map(jnp.zeros_like, theta), model_weight=jnp.zeros((), jnp.float32),
        client_opt=client_opt if hp.shared_momentum else stack(client_opt, c),
        global_iter=jnp.zeros((), jnp.int32))
    if reg is not None and reg.inversion:   # the slots' simulated decoders (eq. 44)
      dec, dec_opt = reg.init_decoder(rng)
      client_state = client_state.replace(decoder=regularisers.GasDecoders(
          slots=stack(dec, c), opt=stack(dec_opt, c), global_=dec,
          total=tree_map(jnp.zeros_like, dec)))
    stats = generation.init_stats(hp, dim)
    last = None
    if hp.keep_last_batch:
      rows = q * b + (m * gen_samples(hp) if hp.generate else 0)
      last = (jnp.zeros((rows,) + tuple(model.activation_shape), jnp.float32),
              jnp.zeros((rows,), jnp.int32), jnp.zeros((rows,), bool))
    server_state = ServerState(server=phi, server_opt=tx.init(model.trainable(phi)),
                               stats=stats, last_batch=last,
                               server_updates=jnp.zeros((), jnp.int32))
    buffer = ActivationBuffer(
        acts=jnp.zeros((q, b, dim), jnp.float32), labels=jnp.zeros((q, b), jnp.int32),
        row_mask=jnp.zeros((q, b), bool), tags=jnp.zeros((q,), jnp.float32),
        tag_shift=jnp.zeros((q,), jnp.float32) if hp.relative_tags else None)
    return GasState(client=client_state, server=server_state, buffer=buffer)

  return Algorithm(init=init, client_step=client_step, server_step=server_step,
                   hparams=hp, cohort_step=cohort_step, generate=generate,
                   compress=compress, client_objective=objective, restart_slot=restart_slot)
