"""Per-label weighted Gaussian statistics of activations (paper eq. 11-12, spec §1.5).

The server keeps, for every label y, the weighted mean mu_y and covariance Sigma_y of the real
activations it received, each row weighted by its tag w_i (spec §1.6), merged batch by batch by
the exact weighted Chan/Welford recurrence (`welford`), and samples generated activations from
N(mu_y, Sigma_y). Kinds (representations) of the statistics, each a module: the square-root
factor (`sqrt_factor`, default; sampled by `sqrt_sampling`, truncated by `lowrank`), the dense
covariance with Cholesky factors and REF's jitter ladder (`dense`), the diagonal (`diagonal`);
the triangular-pentagonal QR the factor's compression uses is `linalg`. The interface below
dispatches through one table, `KINDS` (`kinds`).
"""
from gas_jax.stats.base import Kind, PerLabel
from gas_jax.stats.dense import GaussianStats, cholesky_with_jitter, init
from gas_jax.stats.diagonal import DIAG_SAMPLE_EPS, DiagStats, init_diag
from gas_jax.stats.kinds import (KINDS, compress_label, compressible, covariance, factored,
                                 kind_of, make_room, merge, merge_jit, nbytes, refresh_factors,
                                 report_fallbacks, sample)
from gas_jax.stats.lowrank import lowrank_capacity
from gas_jax.stats.sqrt_factor import SqrtStats, init_sqrt, overflowing, sqrt_capacity
from gas_jax.stats.sqrt_sampling import sampler_impl
from gas_jax.stats.welford import REF_JITTER

__all__ = [
    "DIAG_SAMPLE_EPS", "KINDS", "REF_JITTER", "DiagStats", "GaussianStats", "Kind", "PerLabel",
    "SqrtStats", "cholesky_with_jitter", "compress_label", "compressible", "covariance",
    "factored", "init", "init_diag", "init_sqrt", "kind_of", "lowrank_capacity", "make_room",
    "merge", "merge_jit", "nbytes", "overflowing", "refresh_factors", "report_fallbacks",
    "sample", "sampler_impl", "sqrt_capacity",
]
