"""Triangular-pentagonal QR: the R factor of [R; P] with R already upper triangular.

The square-root statistics (`sqrt_factor.SqrtStats`) keep, per label, a factor G with G^T G = S
(paper eq. 11-12 in square-root form) whose first D rows are an upper-triangular R after the
first compression, followed by the rows merged since. Compressing G again
(`sqrt_factor.compress_label`) needs only the R' of [R; P]
(R'^T R' = R^T R + P^T P). A plain QR of the whole [D + m, D] factor costs
2 (D + m) D^2 - 2 D^3 / 3 flops and ignores that R is triangular; eliminating P against R
(LAPACK's tpqrt) costs 2 m D^2.

`tpqr_r` does that elimination blocked, with the trailing updates as matrix products (compact WY
form, Schreiber & Van Loan 1989): for each block of columns the panel [R_jj; P_j] is factored
by LAPACK (`jnp.linalg.qr(mode="raw")`); its reflectors are I - V T V^T with V = [I; V_b]
(R_jj is triangular, so the top of V is exactly the identity) and T built by doubling
(`_larft`); the remaining columns get [R_j*; P_*] -= V T^T V^T [R_j*; P_*]. Its timings against
`jnp.linalg.qr(mode="r")` of the whole factor are in docs/benchmarks.md ("Factor compression
by triangular-pentagonal QR"); the block widths tried (512-column blocks measured best) in its
section "CPU server update and sampler".

Every product runs at `HIGHEST` precision: JAX's default on recent GPUs is TensorFloat-32 (a
10-bit mantissa), which would perturb R' by ~1e-3 relative at every compression.
"""
import functools

import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST
_mm = functools.partial(jnp.matmul, precision=HIGHEST)


def _larft(vb: jax.Array, tau: jax.Array) -> jax.Array:
  """T (upper triangular) with H_1 ... H_k = I - V T V^T, V = [I; vb], H_i = I - tau_i v_i v_i^T.

  Built bottom-up by doubling (Elmroth & Gustavson 2000): two consecutive groups with factors
  T_1, T_2 combine to [[T_1, -T_1 V_1^T V_2 T_2], [0, T_2]], where V_1^T V_2 = vb_1^T vb_2 (the
  identity top of V adds nothing off the diagonal). Level by level this is a few batched
  products instead of LAPACK larft's k sequential matrix-vector steps. A zero tau (a column
  already zero below the diagonal) gives H_i = I and a zero row and column of T."""
  k = tau.shape[0]
  g = _mm(vb.T, vb)
  size = 1 << max(k - 1, 0).bit_length()            # pad to a power of two with tau = 0
  if size != k:
    g = jnp.pad(g, ((0, size - k), (0, size - k)))
    tau = jnp.pad(tau, (0, size - k))
  t = tau.reshape(size, 1, 1)                       # diagonal blocks of T, [size / s, s, s]
  s = 1
  while s < size:
    n = size // (2 * s)
    blocks = g.reshape(size // s, s, size // s, s)
    g12 = blocks[2 * jnp.arange(n), :, 2 * jnp.arange(n) + 1, :]          # [n, s, s]
    t1, t2 = t[0::2], t[1::2]
    t12 = -jnp.einsum("nab,nbc,ncd->nad", t1, g12, t2, precision=HIGHEST)
    zero = jnp.zeros_like(t1)
    t = jnp.concatenate([jnp.concatenate([t1, t12], 2), jnp.concatenate([zero, t2], 2)], 1)
    s *= 2
  return t[0, :k, :k]


def _blocked(r, p, widths):
  """(R', vb [m, d], tau [d]) for [r; p] with r [d, d] upper triangular: Q^T [r; p] = [R'; 0]
  with Q = H_1 ... H_d = I - V T V^T, V = [I; vb]. Columns are taken `widths[0]` at a time,
  each group factored by `_blocked(..., widths[1:])` (LAPACK when no widths are left) and the
  columns to its right updated with one compact-WY product."""
  d = r.shape[0]
  if not widths or d <= widths[-1]:
    # [r; p]^T: LAPACK reads it column-major, i.e. this row-major array as it is.
    h, tau = jnp.linalg.qr(jnp.concatenate([r.T, p.T], axis=1).T, mode="raw")   # h = a^T
    return jnp.triu(h[:, :d].T), h[:, d:].T, tau
  block, vbs, taus = widths[0], [], []
  for j0 in range(0, d, block):
    j1 = min(j0 + block, d)
    rjj, vb, tau = _blocked(r[j0:j1, j0:j1], p[:, j0:j1], widths[1:])
    r = r.at[j0:j1, j0:j1].set(rjj)
    if j1 < d:
      w = _mm(_larft(vb, tau).T, r[j0:j1, j1:] + _mm(vb.T, p[:, j1:]))   # T^T V^T [R_j*; P_*]
      r = r.at[j0:j1, j1:].add(-w)
      p = p.at[:, j1:].add(-_mm(vb, w))
    vbs.append(vb)
    taus.append(tau)
  return r, jnp.concatenate(vbs, 1), jnp.concatenate(taus)


def tpqr_r(r: jax.Array, p: jax.Array, widths=(512,)) -> jax.Array:
  """R' (upper triangular, [D, D]) with R'^T R' = R^T R + P^T P, for R [D, D] upper triangular
  (entries below its diagonal are ignored) and P [m, D]. Rows of R' may differ in sign from
  `jnp.linalg.qr`'s; R'^T R' is what the statistics use.

  widths: column-block sizes, outermost first (two levels: wide blocks keep the trailing
  products efficient, narrow LAPACK panels keep the panel factorisations cheap)."""
  d = r.shape[0]
  if r.shape != (d, d) or p.ndim != 2 or p.shape[1] != d:
    raise ValueError(f"tpqr_r: R must be [D, D] and P [m, D], got {r.shape} and {p.shape}")
  return _blocked(jnp.triu(r), p, tuple(widths))[0]
