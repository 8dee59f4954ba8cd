"""Reads a prepared TFDS dataset through `tfds.data_source` (ArrayRecord, no TensorFlow needed).

The dataset must already be prepared in ArrayRecord format under `data_dir/<name>/<version>/`,
e.g. with `tfds build cifar10 --file_format=array_record --data_dir <data_dir>` on a machine
with internet access. Nothing is ever downloaded (`download=False`). Records are decoded by
TFDS with NumPy/PIL and copied into uint8 NHWC / int64 arrays. The record order is the one
TFDS stored (TFDS shuffles examples when it prepares a dataset), not the order of the original
files.
"""
from typing import Sequence, Tuple

import numpy as np

from gas_jax.data.local_formats import Raw


def _to_numpy(source, label_key: str, where: str) -> Tuple[np.ndarray, np.ndarray]:
  """Copies every record of one split's data source into (images, labels)."""
  n = len(source)
  if n == 0:
    raise ValueError(f"{where}: the split is empty")
  x = y = None
  for i in range(n):
    record = source[i]
    try:
      image, label = np.asarray(record["image"]), record[label_key]
    except (KeyError, TypeError) as e:
      raise ValueError(f"{where}: records need 'image' and {label_key!r} features") from e
    if x is None:
      if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"{where}: expected uint8 HWC images, got {image.dtype} {image.shape}")
      x = np.empty((n,) + image.shape, np.uint8)
      y = np.empty((n,), np.int64)
    if image.shape != x.shape[1:]:
      raise ValueError(f"{where}: record {i} has shape {image.shape}, expected {x.shape[1:]}")
    x[i] = image
    y[i] = int(label)
  return x, y


def load_tfds(name: str, data_dir: str, label_key: str = "label",
              splits: Sequence[str] = ("train", "test")) -> Raw:
  """Train and test splits of TFDS dataset `name` prepared (ArrayRecord) under `data_dir`.

  Args:
    name: the TFDS name, e.g. "cifar10", "fashion_mnist", "svhn_cropped".
    data_dir: the TFDS data dir (the folder that holds `<name>/`).
    label_key: the feature holding the integer class.
    splits: the TFDS split names to read as (train, test).

  Returns:
    `Raw` uint8 images and int64 labels.

  Raises:
    ValueError: if tensorflow-datasets is missing, or the dataset cannot be opened (e.g. it was
      prepared as TFRecord, which `data_source` cannot read) or holds unexpected records.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ValueError("reading a TFDS dataset needs the tensorflow-datasets package") from e
  try:
    sources = tfds.data_source(name, split=list(splits), data_dir=data_dir, download=False)
  except Exception as e:  # pylint: disable=broad-except  (TFDS raises many unrelated types)
    raise ValueError(f"cannot open the TFDS dataset {name!r} in {data_dir} with "
                     f"tfds.data_source ({type(e).__name__}: {e}); it must be prepared in "
                     "ArrayRecord format") from e
  (x_tr, y_tr), (x_te, y_te) = (
      _to_numpy(src, label_key, f"TFDS {name} split {split!r} in {data_dir}")
      for split, src in zip(splits, sources))
  return Raw(x_tr, y_tr, x_te, y_te)
