"""Algorithms, registered by name in `gas_jax.registry.ALGORITHMS`."""
from gas_jax.algorithms import gas  # noqa: F401
