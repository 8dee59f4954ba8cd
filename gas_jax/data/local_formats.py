"""Readers for the datasets' original on-disk formats, and an .npy cache of decoded arrays.

Every reader takes the folder of one layout and returns `Raw`: uint8 NHWC images and int64
labels for the train and test splits, exactly as stored (no normalisation). Missing files raise
`FileNotFoundError`; files that are present but malformed raise `ValueError`. Callers add the
dataset name and the accepted layouts to the message.

Formats:
  * CIFAR-10/100 python batches: pickled dicts, read with `_RestrictedUnpickler`, which
    resolves only the few numpy/builtin names such files need and refuses everything else, so a
    crafted file cannot run code.
  * CIFAR-10/100 binary: fixed-size records of label byte(s) + 3072 CHW pixel bytes.
  * MNIST / Fashion-MNIST idx files, plain or gzipped.
  * CINIC-10: `train/<class>/*.png`, `test/<class>/*.png`; class id = position in the sorted
    class folder names; grayscale/palette PNGs are converted to RGB.
  * SVHN cropped digits `.mat` files (label 10 means digit 0).

The .npy cache of decoded arrays lives in `gas_jax.data.real`.
"""
import concurrent.futures
import gzip
import os
import pickle
import struct
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np


class Raw(NamedTuple):
  """Undecoded-for-training arrays: uint8 [N, H, W, C] images and int64 [N] labels."""
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


def _require(path: str) -> str:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"missing file {path}")
  return path


# ----------------------------------------------------------------------------------------------
# CIFAR python batches.

def _np_reconstruct():
  try:
    from numpy._core.multiarray import _reconstruct  # pylint: disable=g-import-not-at-top
  except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct  # pylint: disable=g-import-not-at-top
  return _reconstruct


def _codecs_encode():
  import _codecs  # pylint: disable=g-import-not-at-top
  return _codecs.encode


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): _codecs_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that only resolves the globals a CIFAR batch (a dict of arrays) needs."""

  def find_class(self, module, name):
    factory = _ALLOWED_GLOBALS.get((module, name))
    if factory is None:
      raise pickle.UnpicklingError(
          f"refused to load global {module}.{name}: CIFAR batches may only reference "
          f"{', '.join(sorted(f'{m}.{n}' for m, n in _ALLOWED_GLOBALS))}")
    return factory()


def read_cifar_pickle(path: str, label_key: bytes) -> Tuple[np.ndarray, np.ndarray]:
  """One CIFAR python batch -> (uint8 [N, 32, 32, 3], int64 [N])."""
  with open(_require(path), "rb") as f:
    try:
      batch = _RestrictedUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
      raise ValueError(f"{path}: {e}") from e
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError) as e:
      # (a corrupt length field makes pickle try to allocate petabytes: MemoryError)
      raise ValueError(f"{path}: not a readable CIFAR python batch ({type(e).__name__}"
                       f"{': ' + str(e) if str(e) else ''})") from e
  if not isinstance(batch, dict):
    raise ValueError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
  batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
  key = label_key.decode()
  if "data" not in batch or key not in batch:
    raise ValueError(f"{path}: expected keys 'data' and {key!r}, got {sorted(map(str, batch))}")
  data, labels = batch["data"], batch[key]
  if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
      or data.shape[1] != 3072:
    raise ValueError(f"{path}: 'data' must be uint8 [N, 3072], got "
                     f"{getattr(data, 'dtype', type(data).__name__)} {np.shape(data)}")
  try:
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path}: {key!r} is not a list of integers") from e
  if labels.shape[0] != data.shape[0]:
    raise ValueError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _concat(parts: Sequence[Tuple[np.ndarray, np.ndarray]]) -> Tuple[np.ndarray, np.ndarray]:
  return (np.ascontiguousarray(np.concatenate([p[0] for p in parts])),
          np.concatenate([p[1] for p in parts]))


def read_cifar10_python(folder: str) -> Raw:
  """`cifar-10-batches-py/`: data_batch_1..5 and test_batch."""
  train = _concat([read_cifar_pickle(os.path.join(folder, f"data_batch_{i}"), b"labels")
                   for i in range(1, 6)])
  test = read_cifar_pickle(os.path.join(folder, "test_batch"), b"labels")
  return Raw(*train, *test)


def read_cifar100_python(folder: str) -> Raw:
  """`cifar-100-python/`: train and test, fine labels."""
  train = read_cifar_pickle(os.path.join(folder, "train"), b"fine_labels")
  test = read_cifar_pickle(os.path.join(folder, "test"), b"fine_labels")
  return Raw(*train, *test)


# ----------------------------------------------------------------------------------------------
# CIFAR binary.

def read_cifar_bin(path: str, label_bytes: int) -> Tuple[np.ndarray, np.ndarray]:
  """Records of `label_bytes` label bytes + 3072 CHW pixels; the last label byte is used."""
  raw = np.fromfile(_require(path), dtype=np.uint8)
  rec = label_bytes + 3072
  if raw.size == 0 or raw.size % rec:
    raise ValueError(f"{path}: size {raw.size} is not a positive multiple of the {rec}-byte "
                     "CIFAR record")
  raw = raw.reshape(-1, rec)
  x = raw[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(x), raw[:, label_bytes - 1].astype(np.int64)


def read_cifar10_bin(folder: str) -> Raw:
  """`cifar-10-batches-bin/`: data_batch_1..5.bin and test_batch.bin."""
  train = _concat([read_cifar_bin(os.path.join(folder, f"data_batch_{i}.bin"), 1)
                   for i in range(1, 6)])
  return Raw(*train, *read_cifar_bin(os.path.join(folder, "test_batch.bin"), 1))


def read_cifar100_bin(folder: str) -> Raw:
  """`cifar-100-binary/`: train.bin and test.bin (coarse, fine label bytes)."""
  return Raw(*read_cifar_bin(os.path.join(folder, "train.bin"), 2),
             *read_cifar_bin(os.path.join(folder, "test.bin"), 2))


# ----------------------------------------------------------------------------------------------
# MNIST-style idx files.

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def has_idx(folder: str) -> bool:
  return any(os.path.isfile(os.path.join(folder, IDX_FILES[0] + s)) for s in ("", ".gz"))


def read_idx(path: str, ndim: int) -> np.ndarray:
  """An idx file of unsigned bytes with `ndim` dimensions, gzipped or not."""
  with open(path, "rb") as f:
    head = f.read(2)
  opener = gzip.open if head == b"\x1f\x8b" else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise ValueError(f"{path}: cannot decompress ({e})") from e
  if len(data) < 4 + 4 * ndim or data[:4] != bytes([0, 0, 0x08, ndim]):
    raise ValueError(f"{path}: not an idx file of {ndim}-d unsigned bytes "
                     f"(magic {data[:4].hex()}, expected 000008{ndim:02x})")
  shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
  body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(shape)):
    raise ValueError(f"{path}: header says {shape} but holds {body.size} bytes")
  return body.reshape(shape)


def _idx_path(folder: str, stem: str) -> str:
  for suffix in ("", ".gz"):
    path = os.path.join(folder, stem + suffix)
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(f"missing file {os.path.join(folder, stem)}[.gz]")


def read_idx_folder(folder: str) -> Raw:
  """The four MNIST idx files (plain or .gz) of `folder` -> 28x28x1 images."""
  arrays = []
  for images, labels in (IDX_FILES[:2], IDX_FILES[2:]):
    x = read_idx(_idx_path(folder, images), 3)
    y = read_idx(_idx_path(folder, labels), 1)
    if x.shape[0] != y.shape[0]:
      raise ValueError(f"{folder}: {images} has {x.shape[0]} images but {labels} "
                       f"{y.shape[0]} labels")
    arrays += [x[..., None].copy(), y.astype(np.int64)]
  return Raw(*arrays)


# ----------------------------------------------------------------------------------------------
# CINIC-10 PNG folders.

def _read_png(path: str) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"), dtype=np.uint8)
  except (OSError, ValueError, SyntaxError) as e:
    raise ValueError(f"{path}: unreadable image ({e})") from e


def read_image_folder(folder: str, size: Tuple[int, int] = (32, 32),
                      workers: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, List[str]]:
  """`folder/<class>/*.png` -> (uint8 [N, H, W, 3], int64 [N], sorted class names)."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"missing folder {folder}")
  classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
  if not classes:
    raise ValueError(f"{folder}: no class folders")
  paths, labels = [], []
  for i, cls in enumerate(classes):
    files = sorted(e.name for e in os.scandir(os.path.join(folder, cls))
                   if e.is_file() and e.name.lower().endswith(".png"))
    paths += [os.path.join(folder, cls, f) for f in files]
    labels += [i] * len(files)
  if not paths:
    raise ValueError(f"{folder}: no .png files in the class folders")
  x = np.empty((len(paths), *size, 3), np.uint8)
  with concurrent.futures.ThreadPoolExecutor(workers or min(16, os.cpu_count() or 1)) as pool:
    for i, (path, img) in enumerate(zip(paths, pool.map(_read_png, paths, chunksize=256))):
      if img.shape != (*size, 3):
        raise ValueError(f"{path}: expected a {size[0]}x{size[1]} image, got {img.shape[:2]}")
      x[i] = img
  return x, np.asarray(labels, np.int64), classes


def read_cinic(folder: str) -> Raw:
  """CINIC-10 root (`train/`, `test/`; `valid/` unused) with identical class folders."""
  x_tr, y_tr, c_tr = read_image_folder(os.path.join(folder, "train"))
  x_te, y_te, c_te = read_image_folder(os.path.join(folder, "test"))
  if c_tr != c_te:
    raise ValueError(f"{folder}: train classes {c_tr} differ from test classes {c_te}")
  return Raw(x_tr, y_tr, x_te, y_te)


# ----------------------------------------------------------------------------------------------
# SVHN .mat files.

def read_svhn_mat(path: str) -> Tuple[np.ndarray, np.ndarray]:
  """`*_32x32.mat` (X: [32, 32, 3, N], y: [N, 1] in 1..10) -> NHWC images, labels 0..9."""
  import scipy.io  # pylint: disable=g-import-not-at-top
  try:
    mat = scipy.io.loadmat(_require(path))
  except (ValueError, TypeError, OSError, NotImplementedError) as e:
    if isinstance(e, FileNotFoundError):
      raise
    raise ValueError(f"{path}: not a readable MATLAB file ({e})") from e
  x, y = mat.get("X"), mat.get("y")
  if x is None or y is None or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
    raise ValueError(f"{path}: expected uint8 X [32, 32, 3, N] and y [N, 1]")
  y = np.asarray(y).reshape(-1).astype(np.int64)
  if y.shape[0] != x.shape[3] or (y.size and (y.min() < 0 or y.max() > 10)):
    raise ValueError(f"{path}: y must hold {x.shape[3]} labels in 1..10")
  return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), np.where(y == 10, 0, y)


def read_svhn(folder: str) -> Raw:
  return Raw(*read_svhn_mat(os.path.join(folder, "train_32x32.mat")),
             *read_svhn_mat(os.path.join(folder, "test_32x32.mat")))
