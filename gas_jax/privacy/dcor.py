"""Distance correlation, the NoPeek leakage measure and regulariser (spec/privacy.md §3).

For a batch of n inputs x_i and activations z_i, each flattened to a row:
  a_jk = sqrt(||x_j - x_k||^2 + eps),  b_jk = sqrt(||z_j - z_k||^2 + eps)   (every pair, the
         diagonal too: eps keeps the gradient of the distance finite at 0, as NoPeek's 1e-7)
  A = a - row mean - column mean + grand mean, B likewise        (double centring)
  dCov^2 = sum(A * B) / n^2,  dVar_x^2 = sum(A * A) / n^2,  dVar_z^2 = sum(B * B) / n^2
  DCOR = dCov / sqrt(dVar_x dVar_z) = sqrt(dCov^2 / sqrt(dVar_x^2 dVar_z^2 + eps^2))

It lies in [0, 1], is invariant to scaling either input and is 1 when z is an affine function
a x + b of x (a != 0). eps^2 in the denominator makes constant inputs (A = 0 or B = 0) give 0
instead of 0/0; dCov^2 < 0 from rounding is clipped to 0, and the square root at 0 has a zero
(finite) gradient. Squared distances come from the Gram matrix of the centred rows
(||x_j||^2 - 2 x_j.x_k + ||x_k||^2, clipped at 0), so the cost is O(n^2 D) without an
[n, n, D] intermediate. Pure jnp, differentiable, jit-able; any n >= 2.

Scale: eps acts like a distance of sqrt(eps) ~ 3e-4 (the diagonal's sqrt(eps) against
sqrt(d^2 + eps) ~ d off it), so the invariance to scaling holds while the typical distance
between rows is >> 3e-4 (relative error ~ 3e-4 / distance): true of images and activations.
"""
import jax
import jax.numpy as jnp


def pairwise_distances(x, eps: float = 1e-7):
  """sqrt(||x_j - x_k||^2 + eps) - sqrt(eps) for the rows of x [n, D]: [n, n].

  The shift by -sqrt(eps) (every entry, the diagonal too) leaves the double-centred matrix
  unchanged and makes it exactly 0 for constant rows. The rows are centred first (distances do
  not change), which keeps the Gram matrix's float32 cancellation small."""
  x = x - jnp.mean(x, axis=0, keepdims=True)
  sq = jnp.sum(x * x, axis=1)
  d2 = sq[:, None] - 2.0 * (x @ x.T) + sq[None, :]
  return jnp.sqrt(jnp.maximum(d2, 0.0) + eps) - jnp.sqrt(eps)


def double_centre(a):
  """a - row means - column means + grand mean."""
  return (a - jnp.mean(a, axis=0, keepdims=True) - jnp.mean(a, axis=1, keepdims=True)
          + jnp.mean(a))


@jax.jit
def distance_correlation(x, z, eps: float = 1e-7):
  """DCOR(x, z) of two batches with the same leading size n (rows flattened): a scalar."""
  n = x.shape[0]
  if z.shape[0] != n:
    raise ValueError(f"distance_correlation: {n} inputs but {z.shape[0]} activations")
  x = jnp.reshape(jnp.asarray(x, jnp.float32), (n, -1))
  z = jnp.reshape(jnp.asarray(z, jnp.float32), (n, -1))
  A = double_centre(pairwise_distances(x, eps))
  B = double_centre(pairwise_distances(z, eps))
  dcov2 = jnp.sum(A * B) / n ** 2
  dvar_x2 = jnp.sum(A * A) / n ** 2
  dvar_z2 = jnp.sum(B * B) / n ** 2
  r2 = jnp.maximum(dcov2, 0.0) / jnp.sqrt(dvar_x2 * dvar_z2 + eps ** 2)
  pos = r2 > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, r2, 1.0)), 0.0)
