"""gas-jax: asynchronous split federated learning (GAS, Yang & Liu, AAAI 2025) in JAX."""
from setuptools import find_packages, setup

setup(
    name="gas-jax",
    version="0.1.0",
    description="GAS (Generative Activation-aided Asynchronous Split FL) and baselines in JAX/Flax",
    # Not benchmarks/ (run from the repository root: python -m benchmarks.run NAME) nor tests/.
    packages=find_packages(include=["gas_jax", "gas_jax.*", "configs"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10,<0.11", "flax", "optax", "chex", "ml-collections", "absl-py",
        "orbax-checkpoint", "tensorflow-datasets", "numpy", "scikit-learn", "matplotlib",
    ],
)
