"""Real image datasets read from `data.dir`: cifar10, cifar100, cinic10, fashion_mnist, mnist, svhn.

Nothing is downloaded. Each builder tries its accepted layouts under the data dir in order and
uses the first one present (a present but broken layout is an error, not a reason to try the
next one):
  * cifar10: `cifar-10-batches-py/` (python batches), `cifar-10-batches-bin/` (binary),
    `cifar10/` (TFDS ArrayRecord).
  * cifar100: `cifar-100-python/`, `cifar-100-binary/`, `cifar100/` (TFDS); fine labels.
  * cinic10: `CINIC-10/`, `cinic-10/` or the data dir itself, holding `train/<class>/*.png` and
    `test/<class>/*.png` (`valid/` unused); label = position of the class in sorted names.
  * mnist / fashion_mnist: the four idx files (plain or .gz) in the data dir itself, in
    torchvision's `MNIST/raw/` / `FashionMNIST/raw/`, or in `mnist/` / `fashion_mnist/`; else
    `mnist/` / `fashion_mnist/` as TFDS ArrayRecord. (Idx files directly in the data dir are
    read for either name.)
  * svhn: `train_32x32.mat` and `test_32x32.mat` in the data dir or in `svhn/`, or
    `svhn_cropped/` (TFDS). Label 10 (digit 0) becomes 0.

Images are scaled to [0, 1] and normalised per channel with the fixed torchvision constants of
spec §4.1 (not with statistics of the loaded data); MNIST-like images are 28x28x1. PNG folders
and TFDS datasets are slow to decode, so their uint8 arrays are cached as .npy files in
`<data dir>/gas_jax_cache/`, keyed by a fingerprint (paths, sizes, mtimes) of the source files;
the cache is skipped if the data dir is read-only.
"""
import dataclasses
import functools
import hashlib
import logging
import os
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from gas_jax.data import dataset
from gas_jax.data import local_formats as lf
from gas_jax.data import tfds_source
from gas_jax.errors import ConfigError, DataError
from gas_jax.registry import DATASETS


@dataclasses.dataclass(frozen=True)
class _Layout:
  """One accepted on-disk layout: a folder relative to the data dir and how to read it."""
  sub: str                           # "" = the data dir itself
  what: str                          # shown in error messages
  present: Callable[[str], bool]     # folder -> whether this layout is there
  read: Callable[[str], lf.Raw]      # folder -> raw arrays
  cache_tag: Optional[str] = None    # cache the decoded arrays under this tag
  cache_roots: Tuple[str, ...] = ("",)  # sub-folders whose files key the cache


@dataclasses.dataclass(frozen=True)
class _Spec:
  name: str
  num_classes: int
  shape: Tuple[int, int, int]
  mean: Tuple[float, ...]
  std: Tuple[float, ...]
  layouts: Tuple[_Layout, ...]


def _folder(sub, what, read):
  return _Layout(sub, what, os.path.isdir, read)


def _tfds(tfds_name: str) -> _Layout:
  return _Layout(tfds_name, f"TFDS ArrayRecord, prepare with `tfds build {tfds_name} "
                 "--file_format=array_record`", os.path.isdir,
                 lambda folder: tfds_source.load_tfds(tfds_name, os.path.dirname(folder)),
                 cache_tag="tfds")


def _idx(sub: str) -> _Layout:
  what = "idx files {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"
  return _Layout(sub, what, lf.has_idx, lf.read_idx_folder)


def _cinic(sub: str) -> _Layout:
  present = (lambda f: os.path.isdir(os.path.join(f, "train"))) if not sub else os.path.isdir
  return _Layout(sub, "PNG folders train/<class>/*.png and test/<class>/*.png", present,
                 lf.read_cinic, cache_tag="png", cache_roots=("train", "test"))


def _svhn(sub: str) -> _Layout:
  def present(f):
    return any(os.path.isfile(os.path.join(f, n)) for n in ("train_32x32.mat", "test_32x32.mat"))
  return _Layout(sub, "train_32x32.mat and test_32x32.mat", present, lf.read_svhn)


_SPECS = (
    _Spec("cifar10", 10, (32, 32, 3), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), (
        _folder("cifar-10-batches-py", "python batches", lf.read_cifar10_python),
        _folder("cifar-10-batches-bin", "binary", lf.read_cifar10_bin),
        _tfds("cifar10"))),
    _Spec("cifar100", 100, (32, 32, 3), (0.50708, 0.48655, 0.44092),
          (0.26733, 0.25644, 0.27615), (
              _folder("cifar-100-python", "python batches", lf.read_cifar100_python),
              _folder("cifar-100-binary", "binary", lf.read_cifar100_bin),
              _tfds("cifar100"))),
    _Spec("cinic10", 10, (32, 32, 3), (0.47889522, 0.47227842, 0.43047404),
          (0.24205776, 0.23828046, 0.25874835),
          (_cinic("CINIC-10"), _cinic("cinic-10"), _cinic(""))),
    _Spec("fashion_mnist", 10, (28, 28, 1), (0.286,), (0.3205,),
          (_idx(""), _idx(os.path.join("FashionMNIST", "raw")), _idx("fashion_mnist"),
           _tfds("fashion_mnist"))),
    _Spec("mnist", 10, (28, 28, 1), (0.1307,), (0.3081,),
          (_idx(""), _idx(os.path.join("MNIST", "raw")), _idx("mnist"), _tfds("mnist"))),
    _Spec("svhn", 10, (32, 32, 3), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
          (_svhn(""), _svhn("svhn"), _tfds("svhn_cropped"))),
)


def _expected(spec: _Spec, root: str) -> str:
  return "; expected one of: " + ", ".join(
      f"{os.path.join(root, l.sub, '')} ({l.what})" for l in spec.layouts)


def normalise(x: np.ndarray, mean, std) -> np.ndarray:
  """uint8 NHWC -> float32 (x / 255 - mean) / std per channel."""
  out = x.astype(np.float32)
  out *= np.float32(1.0 / 255.0)
  out -= np.asarray(mean, np.float32)
  out /= np.asarray(std, np.float32)
  return out


# .npy cache (np.save / np.load(allow_pickle=False), atomic writes; never pickle).
CACHE_DIR = "gas_jax_cache"


def fingerprint(roots: Sequence[str]) -> str:
  """Hash of the relative paths, sizes and mtimes of every file under `roots`."""
  h = hashlib.sha256()
  for root in roots:
    for dirpath, dirnames, filenames in os.walk(root):
      dirnames.sort()
      for name in sorted(filenames):
        st = os.stat(os.path.join(dirpath, name))
        rel = os.path.relpath(os.path.join(dirpath, name), root)
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  return h.hexdigest()[:20]


def _cache_paths(data_dir: str, name: str, key: str) -> Dict[str, str]:
  return {f: os.path.join(data_dir, CACHE_DIR, f"{name}-{key}.{f}.npy") for f in lf.Raw._fields}


def cache_load(data_dir: str, name: str, key: str) -> Optional[lf.Raw]:
  """The cached arrays for (`name`, `key`), or None if absent or inconsistent."""
  paths = _cache_paths(data_dir, name, key)
  if not all(os.path.isfile(p) for p in paths.values()):
    return None
  try:
    raw = lf.Raw(**{f: np.load(p, allow_pickle=False) for f, p in paths.items()})
  except (OSError, ValueError, EOFError):
    return None
  ok = all(x.dtype == np.uint8 and x.ndim == 4 and y.dtype == np.int64 and
           y.shape == (x.shape[0],)
           for x, y in ((raw.x_train, raw.y_train), (raw.x_test, raw.y_test)))
  return raw if ok else None


def cache_save(data_dir: str, name: str, key: str, raw: lf.Raw) -> None:
  """Writes `raw` (each file via a temp file + os.replace); drops older caches of `name`."""
  folder = os.path.join(data_dir, CACHE_DIR)
  os.makedirs(folder, exist_ok=True)
  paths = _cache_paths(data_dir, name, key)
  for stale in os.listdir(folder):
    if stale.startswith(f"{name}-") and os.path.join(folder, stale) not in paths.values():
      os.remove(os.path.join(folder, stale))
  for field, path in paths.items():
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
      np.save(f, getattr(raw, field), allow_pickle=False)
    os.replace(tmp, path)


def _read(spec: _Spec, layout: _Layout, root: str, folder: str) -> lf.Raw:
  """Reads one layout, through the .npy cache if the layout is cached."""
  if layout.cache_tag is None:
    return layout.read(folder)
  key = fingerprint([os.path.join(folder, r) for r in layout.cache_roots])
  cache_name = f"{spec.name}.{layout.cache_tag}"
  raw = cache_load(root, cache_name, key)
  if raw is None:
    raw = layout.read(folder)
    try:
      cache_save(root, cache_name, key, raw)
    except OSError as e:
      logging.warning("data.name=%s: not caching decoded arrays in %s (%s)", spec.name, root, e)
  return raw


def _validate(spec: _Spec, raw: lf.Raw) -> None:
  for split, x, y in (("train", raw.x_train, raw.y_train), ("test", raw.x_test, raw.y_test)):
    if x.dtype != np.uint8 or x.shape[1:] != spec.shape:
      raise ValueError(f"{split} images must be uint8 {spec.shape}, got {x.dtype} {x.shape[1:]}")
    if y.shape != (x.shape[0],):
      raise ValueError(f"{split}: {x.shape[0]} images but labels of shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= spec.num_classes):
      raise ValueError(f"{split} labels must lie in [0, {spec.num_classes}), got "
                       f"[{y.min()}, {y.max()}]")


def build(spec: _Spec, data_dir: Optional[str]) -> dataset.Dataset:
  """Finds, reads, checks and normalises `spec`'s dataset under `data_dir`."""
  if not data_dir:
    raise ConfigError(f"data.name={spec.name}: data.dir must be set for this dataset (nothing "
                     f"is downloaded){_expected(spec, '<data.dir>')}")
  root = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
  for layout in spec.layouts:
    folder = os.path.join(root, layout.sub)
    if not layout.present(folder):
      continue
    where = f"data.name={spec.name}: {os.path.join(folder, '')} ({layout.what})"
    try:
      raw = _read(spec, layout, root, folder)
      _validate(spec, raw)
    except FileNotFoundError as e:
      raise FileNotFoundError(f"{where} is incomplete: {e}") from e
    except (ValueError, OSError, EOFError) as e:
      raise DataError(f"{where} is unreadable or malformed: {e}") from e
    return dataset.check(dataset.Dataset(
        name=spec.name,
        x_train=normalise(raw.x_train, spec.mean, spec.std),
        y_train=raw.y_train.astype(np.int32),
        x_test=normalise(raw.x_test, spec.mean, spec.std),
        y_test=raw.y_test.astype(np.int32),
        num_classes=spec.num_classes))
  missing = "" if os.path.isdir(root) else " (the folder does not exist)"
  raise FileNotFoundError(f"data.name={spec.name}: dataset not found in {root}{missing}"
                          f"{_expected(spec, root)}")


SPECS = {s.name: s for s in _SPECS}
for _spec in _SPECS:
  DATASETS.register(_spec.name)(functools.partial(build, _spec))
