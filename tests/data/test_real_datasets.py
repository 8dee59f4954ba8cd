"""Tests for the real datasets: tiny fixtures written in each on-disk format, loaded by name."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.image_classification import cifar

from gas_jax.data import dataset, local_formats
from helpers.real_files import images, write_cifar_py, write_idx
from gas_jax.data import real
from gas_jax.data import sources

CIFAR10 = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
CIFAR100 = ((0.50708, 0.48655, 0.44092), (0.26733, 0.25644, 0.27615))
CINIC = ((0.47889522, 0.47227842, 0.43047404), (0.24205776, 0.23828046, 0.25874835))
SVHN = ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))


def check(ds, x_tr, y_tr, x_te, y_te, mean, std, num_classes=10):
  """Compares a loaded Dataset with uint8 NHWC arrays normalised independently in float64."""
  def expected(x):
    return (x.astype(np.float64) / 255.0 - np.asarray(mean)) / np.asarray(std)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert ds.num_classes == num_classes
  np.testing.assert_allclose(ds.x_train, expected(x_tr), atol=1e-5)
  np.testing.assert_allclose(ds.x_test, expected(x_te), atol=1e-5)
  np.testing.assert_array_equal(ds.y_train, y_tr)
  np.testing.assert_array_equal(ds.y_test, y_te)


def cifar10_arrays():
  """10 train images (written as five batches of 2) and 3 test images."""
  x_tr, x_te = images(0, 10), images(1, 3)
  y_tr, y_te = np.arange(10) % 10, np.array([9, 0, 4])
  return x_tr, y_tr, x_te, y_te


def test_cifar10_python_batches(tmp_path):
  x_tr, y_tr, x_te, y_te = cifar10_arrays()
  folder = tmp_path / "cifar-10-batches-py"
  folder.mkdir()
  for i in range(5):
    write_cifar_py(folder / f"data_batch_{i + 1}", x_tr[2 * i:2 * i + 2], y_tr[2 * i:2 * i + 2])
  write_cifar_py(folder / "test_batch", x_te, y_te)
  ds = sources.load_dataset("cifar10", str(tmp_path))
  assert ds.name == "cifar10" and ds.input_shape == (32, 32, 3)
  check(ds, x_tr, y_tr, x_te, y_te, *CIFAR10)


def test_cifar10_binary(tmp_path):
  x_tr, y_tr, x_te, y_te = cifar10_arrays()
  folder = tmp_path / "cifar-10-batches-bin"
  folder.mkdir()

  def records(x, y):
    return np.concatenate([y[:, None].astype(np.uint8),
                           x.transpose(0, 3, 1, 2).reshape(len(x), 3072)], axis=1).tobytes()
  for i in range(5):
    sl = slice(2 * i, 2 * i + 2)
    (folder / f"data_batch_{i + 1}.bin").write_bytes(records(x_tr[sl], y_tr[sl]))
  (folder / "test_batch.bin").write_bytes(records(x_te, y_te))
  check(sources.load_dataset("cifar10", tmp_path), x_tr, y_tr, x_te, y_te, *CIFAR10)


def test_cifar100_python_and_binary(tmp_path):
  x_tr, x_te = images(2, 6), images(3, 4)
  y_tr, y_te = np.array([0, 99, 17, 42, 5, 63]), np.array([99, 1, 2, 3])
  py = tmp_path / "py" / "cifar-100-python"
  py.mkdir(parents=True)
  write_cifar_py(py / "train", x_tr, y_tr, b"fine_labels", {b"coarse_labels": [0] * 6})
  write_cifar_py(py / "test", x_te, y_te, b"fine_labels", {b"coarse_labels": [0] * 4})
  check(sources.load_dataset("cifar100", tmp_path / "py"), x_tr, y_tr, x_te, y_te, *CIFAR100,
        num_classes=100)
  binary = tmp_path / "bin" / "cifar-100-binary"
  binary.mkdir(parents=True)
  for name, x, y in (("train.bin", x_tr, y_tr), ("test.bin", x_te, y_te)):
    coarse = np.full((len(x), 1), 7, np.uint8)
    (binary / name).write_bytes(np.concatenate(
        [coarse, y[:, None].astype(np.uint8), x.transpose(0, 3, 1, 2).reshape(len(x), -1)],
        axis=1).tobytes())
  check(sources.load_dataset("cifar100", tmp_path / "bin"), x_tr, y_tr, x_te, y_te,
        *CIFAR100, num_classes=100)


@pytest.mark.parametrize("sub,gz", [("", False), ("", True), ("mnist", True)])
def test_mnist_idx_files(tmp_path, sub, gz):
  x_tr, x_te = images(4, 12, (28, 28)), images(5, 5, (28, 28))
  y_tr, y_te = np.arange(12) % 10, np.array([3, 1, 4, 1, 5])
  write_idx(tmp_path / sub, x_tr, y_tr, x_te, y_te, gz)
  ds = sources.load_dataset("mnist", tmp_path)
  assert ds.input_shape == (28, 28, 1)
  check(ds, x_tr[..., None], y_tr, x_te[..., None], y_te, (0.1307,), (0.3081,))


def test_fashion_mnist_torchvision_raw_layout(tmp_path):
  x_tr, x_te = images(6, 10, (28, 28)), images(7, 4, (28, 28))
  y_tr, y_te = np.arange(10)[::-1], np.array([0, 9, 8, 7])
  write_idx(tmp_path / "FashionMNIST" / "raw", x_tr, y_tr, x_te, y_te, gz=True)
  ds = sources.load_dataset("fashion_mnist", tmp_path)
  check(ds, x_tr[..., None], y_tr, x_te[..., None], y_te, (0.286,), (0.3205,))


def write_cinic(root):
  """train/ and test/ class folders (unsorted creation order) with one grayscale PNG."""
  classes = ["truck", "horse", "airplane", "ship", "cat"]  # sorted: airplane=0, cat=1, ...
  out = {}
  for split, seed in (("train", 8), ("test", 9)):
    xs, ys = [], []
    for cls in classes:
      (root / split / cls).mkdir(parents=True)
      for j, img in enumerate(images(seed + 10 * len(xs), 2 if cls == "cat" else 1)):
        if split == "train" and cls == "cat" and j == 1:
          gray = img[..., 0]
          Image.fromarray(gray, mode="L").save(root / split / cls / f"{j}.png")
          img = np.repeat(gray[..., None], 3, axis=-1)
        else:
          Image.fromarray(img).save(root / split / cls / f"{j}.png")
        xs.append(img)
        ys.append(sorted(classes).index(cls))
    (root / "valid" / "dog").mkdir(parents=True, exist_ok=True)  # unused split
    order = np.argsort(ys, kind="stable")  # loader order: sorted class, then sorted file name
    out[split] = (np.stack(xs)[order], np.asarray(ys)[order])
  return (*out["train"], *out["test"])


def test_cinic10_png_folders_and_cache(tmp_path, monkeypatch):
  x_tr, y_tr, x_te, y_te = write_cinic(tmp_path / "CINIC-10")
  first = sources.load_dataset("cinic10", tmp_path)
  check(first, x_tr, y_tr, x_te, y_te, *CINIC)
  pixels = first.x_train[2] * np.float32(CINIC[1]) + np.float32(CINIC[0])  # the grayscale PNG
  np.testing.assert_allclose(pixels[..., 1:], pixels[..., :1].repeat(2, -1), atol=1e-6)
  assert os.listdir(tmp_path / real.CACHE_DIR)
  # Second load comes from the .npy cache: the PNG decoder is not called again.
  monkeypatch.setattr(local_formats, "_read_png", lambda p: pytest.fail("decoded " + p))
  check(sources.load_dataset("cinic10", tmp_path), x_tr, y_tr, x_te, y_te, *CINIC)
  # A changed source invalidates the cache.
  (tmp_path / "CINIC-10" / "test" / "cat" / "1.png").unlink()
  with pytest.raises(pytest.fail.Exception, match="decoded"):
    sources.load_dataset("cinic10", tmp_path)


def test_svhn_mat_label_10_is_zero(tmp_path):
  x_tr, x_te = images(10, 6), images(11, 3)
  y_tr, y_te = np.array([10, 1, 2, 10, 9, 5]), np.array([3, 10, 7])
  for name, x, y in (("train_32x32.mat", x_tr, y_tr), ("test_32x32.mat", x_te, y_te)):
    scipy.io.savemat(tmp_path / name, {"X": x.transpose(1, 2, 3, 0), "y": y[:, None]})
  ds = sources.load_dataset("svhn", tmp_path)
  check(ds, x_tr, np.array([0, 1, 2, 0, 9, 5]), x_te, np.array([3, 0, 7]), *SVHN)


class _Exploit:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_malicious_cifar_pickle_is_refused(tmp_path):
  marker = tmp_path / "pwned"
  folder = tmp_path / "cifar-10-batches-py"
  folder.mkdir()
  payload = pickle.dumps({b"data": _Exploit(marker), b"labels": [0]}, protocol=2)
  pickle.loads(pickle.dumps(_Exploit(tmp_path / "control")))  # The payload is live ...
  assert (tmp_path / "control").exists()
  (folder / "data_batch_1").write_bytes(payload)
  with pytest.raises(ValueError, match=r"refused to load global (posix|nt)\.system"):
    sources.load_dataset("cifar10", tmp_path)
  assert not marker.exists()  # ... but the restricted unpickler refuses it.


def test_missing_dataset_names_folder_and_layouts(tmp_path):
  with pytest.raises(FileNotFoundError) as err:
    sources.load_dataset("cifar10", tmp_path)
  msg = str(err.value)
  assert msg.startswith(f"data.name=cifar10: dataset not found in {tmp_path}; expected one of:")
  for part in ("cifar-10-batches-py/ (python batches)", "cifar-10-batches-bin/ (binary)",
               f"{tmp_path}/cifar10/ (TFDS ArrayRecord",
               "tfds build cifar10 --file_format=array_record"):
    assert part in msg
  with pytest.raises(ValueError, match="data.name=mnist: data.dir must be set"):
    sources.load_dataset("mnist", None)


def test_malformed_files_raise_value_error(tmp_path):
  folder = tmp_path / "cifar-10-batches-bin"
  folder.mkdir()
  (folder / "data_batch_1.bin").write_bytes(b"\0" * 3000)
  with pytest.raises(ValueError, match="data_batch_1.bin: size 3000"):
    sources.load_dataset("cifar10", tmp_path)
  write_idx(tmp_path / "MNIST" / "raw", images(0, 2, (28, 28)), np.array([1, 2]),
            images(1, 1, (28, 28)), np.array([3]), gz=False)
  (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x03")
  with pytest.raises(ValueError, match="not an idx file"):
    sources.load_dataset("mnist", tmp_path)
  (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
  with pytest.raises(FileNotFoundError, match="incomplete: missing file .*t10k-labels"):
    sources.load_dataset("mnist", tmp_path)


class Cifar10(cifar.Cifar10, skip_registration=True):
  """TFDS's cifar10 builder with tiny in-memory splits instead of the download."""
  SPLITS = {"train": (images(12, 10), np.arange(10)[::-1]), "test": (images(13, 3), [4, 0, 2])}

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate(*arrays) for split, arrays in self.SPLITS.items()}

  def _generate(self, x, y):  # pylint: disable=arguments-differ
    for i, (img, label) in enumerate(zip(x, y)):  # PIL images: encoding them needs no TF.
      yield i, {"id": f"img{i}", "image": Image.fromarray(img), "label": int(label)}


def test_tfds_array_record_written_by_tfds(tmp_path):
  """A real ArrayRecord dataset written by TFDS's own writer, read back via data_source."""
  Cifar10(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  assert list((tmp_path / "cifar10").glob("*/cifar10-train.array_record-*"))
  ds = sources.load_dataset("cifar10", tmp_path)
  # TFDS shuffles the records when preparing, so compare in label order (labels are unique).
  tr, te = np.argsort(ds.y_train), np.argsort(ds.y_test)
  x_tr, y_tr = Cifar10.SPLITS["train"]
  x_te, y_te = Cifar10.SPLITS["test"]
  (x_tr, y_tr), (x_te, y_te) = ((x[np.argsort(y)], np.sort(y)) for x, y in
                                ((x_tr, y_tr), (x_te, np.asarray(y_te))))
  check(dataset.Dataset("cifar10", ds.x_train[tr], ds.y_train[tr], ds.x_test[te], ds.y_test[te],
                        10), x_tr, y_tr, x_te, y_te, *CIFAR10)


@pytest.mark.parametrize("name,shape,norm", [
    ("cifar10", (32, 32, 3), CIFAR10), ("fashion_mnist", (28, 28, 1), ((0.286,), (0.3205,)))])
def test_tfds_mock_data_source(tmp_path, name, shape, norm):
  """`tfds.testing.mock_data` patches `tfds.data_source` with random records (USE_CODE)."""
  (tmp_path / name).mkdir()  # The layout is detected by its folder.
  with tfds.testing.mock_data(num_examples=7, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = sources.load_dataset(name, tmp_path)
    train, test = tfds.data_source(name, split=["train", "test"], download=False)
    expected = [(np.stack([r["image"] for r in src]), np.array([int(r["label"]) for r in src]))
                for src in ([train[i] for i in range(7)], [test[i] for i in range(7)])]
  assert ds.x_train.shape == (7, *shape) and ds.x_test.shape == (7, *shape)
  check(ds, *expected[0], *expected[1], *norm)
