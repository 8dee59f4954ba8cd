"""Gradient dissimilarity of the server update (paper Fig. 2a, spec §1.10): how far the gradient
on the server's last (real + generated) batch is from the gradient on test data."""
import jax
import jax.numpy as jnp
from jax.tree_util import tree_map

from gas_jax import losses


def gradient_dissimilarity(model, phi, theta_glob, last_batch, test_x, test_y):
  """Paper Fig. 2a / spec §1.10: V = mean over parameter tensors of ||g_batch - g_true||^2, with
  g_batch the server gradient on the last server-update batch (after generation) and g_true the
  mean server gradient over test minibatches test_x [nb, bs, ...] through theta_glob, both at
  phi."""
  x, y, valid = last_batch
  g_batch = jax.grad(lambda p: losses.masked_mean_ce(model.server_apply(p, x), y, valid))(phi)

  def test_grad(xy):
    tx, ty = xy
    act = model.client_apply(theta_glob, tx)
    return jax.grad(lambda p: losses.masked_mean_ce(model.server_apply(p, act), ty,
                                                    jnp.ones(ty.shape, bool)))(phi)

  g_true = tree_map(lambda g: jnp.mean(g, 0), jax.lax.map(test_grad, (test_x, test_y)))
  sq = [jnp.sum(jnp.square(a - b_)) for a, b_ in zip(jax.tree_util.tree_leaves(g_batch),
                                                       jax.tree_util.tree_leaves(g_true))]
  return jnp.mean(jnp.stack(sq))
