"""Optimisers as optax chains without the learning rate (it is applied by the step, so the
paper's decay eta_t = eta_0 / sqrt(t) can follow the global iteration counter).

REF (spec §0): g <- clip(g, 10) by global norm; g <- g + 5e-4 w; buf <- 0.9 buf + g; w <- w - lr buf.
"""
import jax
import optax

from gas_jax.errors import ConfigError


def make_transform(name: str, momentum: float, weight_decay: float, clip_norm: float):
  parts = []
  if clip_norm and clip_norm > 0:
    parts.append(optax.clip_by_global_norm(clip_norm))
  if weight_decay:
    parts.append(optax.add_decayed_weights(weight_decay))
  if name == "sgd":
    if momentum:
      parts.append(optax.trace(decay=momentum, nesterov=False))
  elif name == "adam":
    parts.append(optax.scale_by_adam())
  else:
    raise ConfigError(f"optimizer.name={name!r} is unknown; allowed: adam, sgd")
  return optax.chain(*parts)


def apply(tx, params, grads, opt_state, lr):
  """One step: params - lr * tx(grads)."""
  updates, opt_state = tx.update(grads, opt_state, params)
  params = jax.tree_util.tree_map(lambda p, u: p - lr * u.astype(p.dtype), params, updates)
  return params, opt_state


def learning_rate(lr0, global_iter, decay: str):
  """REF: constant. 'sqrt': eta_t = eta_0 / sqrt(t), t = 1 + completed global iterations."""
  if decay == "none":
    return lr0
  if decay == "sqrt":
    return lr0 / jax.numpy.sqrt(1.0 + global_iter)
  raise ConfigError(f"optimizer.decay={decay!r} is unknown; allowed: none, sqrt")
