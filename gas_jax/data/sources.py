"""Datasets by name: normalised NHWC numpy arrays for train and test.

Every dataset is a builder registered in `gas_jax.registry.DATASETS` under its config name
(`data.name`). A builder takes the data directory (or None) and returns a `Dataset` whose
images are float32 NHWC and already normalised, and whose labels are int32 in [0, M)
(`gas_jax.data.dataset`, re-exported here as `sources.Dataset`).

Registered here:
  * "digits": scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), stratified
    80/20 split with random_state=0, pixels / 16, then one scalar mean / std from the train
    split applied to both splits. Needs no download and caches nothing.
  * "synthetic": random normal 8x8x1 images, 10 balanced classes, 1000 train / 200 test
    (see `synthetic_dataset`), for tests and benchmarks.
"""
from typing import Optional, Tuple

import numpy as np

from gas_jax.data.dataset import Dataset, check
from gas_jax.registry import DATASETS


def load_dataset(name: str, data_dir: Optional[str]) -> Dataset:
  """Builds the dataset registered as `name`.

  Args:
    name: the config value `data.name`.
    data_dir: where the builder may read files from (ignored by in-memory datasets).

  Returns:
    The `Dataset`.

  Raises:
    ValueError: naming `data.name` and the allowed names if `name` is unknown.
  """
  builder = DATASETS.get(name)
  return builder(data_dir)


@DATASETS.register("digits")
def _digits(data_dir: Optional[str]) -> Dataset:
  """scikit-learn digits: 1437 train / 360 test 8x8x1 images, 10 classes."""
  del data_dir  # Bundled with scikit-learn.
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  from sklearn.model_selection import train_test_split  # pylint: disable=g-import-not-at-top

  digits = load_digits()
  x = digits.data.astype(np.float64) / 16.0
  y = digits.target
  x_train, x_test, y_train, y_test = train_test_split(
      x, y, test_size=0.2, random_state=0, stratify=y)
  mean = x_train.mean()
  std = x_train.std()

  def prep(a):
    return ((a - mean) / std).reshape(-1, 8, 8, 1).astype(np.float32)

  return check(Dataset(
      name="digits",
      x_train=prep(x_train), y_train=y_train.astype(np.int32),
      x_test=prep(x_test), y_test=y_test.astype(np.int32),
      num_classes=10))


def synthetic_dataset(input_shape: Tuple[int, int, int] = (8, 8, 1),
                      num_classes: int = 10,
                      n_train: int = 1000,
                      n_test: int = 200,
                      seed: int = 0,
                      signal: float = 1.0) -> Dataset:
  """Random normal images with balanced labels.

  Labels are assigned round-robin (example i has label i mod M), so every class has
  floor or ceil of n / M examples. Each image is standard normal noise plus `signal` times a
  fixed random normal template of its class, so the task is learnable for signal > 0 and pure
  noise for signal = 0.

  Args:
    input_shape: (H, W, C).
    num_classes: M.
    n_train: number of train examples.
    n_test: number of test examples.
    seed: seed of the generator that draws templates and noise.
    signal: scale of the per-class template added to the noise.

  Returns:
    A `Dataset` named "synthetic".
  """
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E7]))
  shape = tuple(int(d) for d in input_shape)
  templates = rng.standard_normal((num_classes,) + shape)

  def split(n):
    y = (np.arange(n) % num_classes).astype(np.int32)
    x = rng.standard_normal((n,) + shape) + signal * templates[y]
    return x.astype(np.float32), y

  x_train, y_train = split(n_train)
  x_test, y_test = split(n_test)
  return check(Dataset(name="synthetic", x_train=x_train, y_train=y_train,
                        x_test=x_test, y_test=y_test, num_classes=num_classes))


@DATASETS.register("synthetic")
def _synthetic(data_dir: Optional[str]) -> Dataset:
  """The default synthetic dataset: 8x8x1, 10 classes, 1000 train / 200 test."""
  del data_dir
  return synthetic_dataset((8, 8, 1), 10, 1000, 200, seed=0)


from gas_jax.data import real  # noqa: E402,F401  (registers the real datasets)
