"""The `Dataset` record every dataset builder returns, and its check.

Its own module so that the builders (`gas_jax.data.sources` for the in-memory datasets,
`gas_jax.data.real` for the ones read from `data.dir`) share it without importing each other.
"""
import dataclasses
from typing import Tuple

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A normalised image-classification dataset held in host memory.

  Attributes:
    name: the registry name the dataset was built from.
    x_train: float32 [N, H, W, C], normalised.
    y_train: int32 [N], labels in [0, num_classes).
    x_test: float32 [N_test, H, W, C], normalised with the train statistics.
    y_test: int32 [N_test].
    num_classes: M.
  """
  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int

  @property
  def input_shape(self) -> Tuple[int, int, int]:
    """The per-example image shape (H, W, C)."""
    return tuple(int(d) for d in self.x_train.shape[1:])


def check(ds: Dataset) -> Dataset:
  """Validates dtypes, ranks and label range of a freshly built dataset; returns it."""
  for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
    if x.dtype != np.float32 or x.ndim != 4:
      raise ValueError(f"{ds.name} {split}: images must be float32 NHWC, got {x.dtype} {x.shape}")
    if y.dtype != np.int32 or y.shape != (x.shape[0],):
      raise ValueError(f"{ds.name} {split}: labels must be int32 [{x.shape[0]}], "
                       f"got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= ds.num_classes):
      raise ValueError(f"{ds.name} {split}: labels outside [0, {ds.num_classes})")
  return ds
