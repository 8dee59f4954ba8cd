"""The real Fashion-MNIST, as Debian's `dataset-fashion-mnist` installs it (`apt-get install
dataset-fashion-mnist`: the four gzipped idx files in /usr/share/datasets/fashion-mnist/), loaded
through configs/fmnist.py with `data.dir` pointing there.

Checks the full 60,000 / 10,000 split, 6,000 / 1,000 images per class, the published pixel
statistics of the raw train images in [0, 1] (mean 0.2860, std 0.3530 over all train pixels),
the fixed normalisation constants of spec §4.1 (mean 0.286, std 0.3205: REF's, which are not the
pixel std, so the normalised train images have std 0.3530 / 0.3205 = 1.101, not 1), that the
loaded arrays are the files' bytes normalised with those constants, and then ONE global iteration
of GAS (AlexNet L2, K=20, C=2, E=1) through `train.train_and_evaluate`, evaluated on the first
1,000 test images (the full test set alone would take ~20 s of AlexNet forward passes on a
2-core CPU).

Skipped only if the directory does not exist (the package is not installed).
"""
import dataclasses
import gzip
import os

import numpy as np
import pytest

from configs import fmnist
from gas_jax import train
from gas_jax.data import real
from gas_jax.data import sources

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
# Published statistics of the 60,000 train images scaled to [0, 1] (all pixels pooled).
PIXEL_MEAN, PIXEL_STD = 0.2860, 0.3530
# Spec §4.1 / REF: the constants the loader normalises with.
REF_MEAN, REF_STD = 0.286, 0.3205


def _raw(prefix):
  """The idx files read here, independently of the loader: uint8 [N, 28, 28], uint8 [N]."""
  with gzip.open(os.path.join(FMNIST_DIR, f"{prefix}-images-idx3-ubyte.gz"), "rb") as f:
    x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
  with gzip.open(os.path.join(FMNIST_DIR, f"{prefix}-labels-idx1-ubyte.gz"), "rb") as f:
    y = np.frombuffer(f.read(), np.uint8, offset=8)
  return x, y


@pytest.fixture(scope="module")
def config():
  if not os.path.isdir(FMNIST_DIR):
    pytest.skip(f"{FMNIST_DIR} does not exist: real Fashion-MNIST not installed "
                "(apt-get install dataset-fashion-mnist)")
  c = fmnist.get_config()
  c.data.dir = FMNIST_DIR
  return c


@pytest.fixture(scope="module")
def dataset(config):
  return sources.load_dataset(config.data.name, config.data.dir)


def test_counts(dataset):
  assert dataset.name == "fashion_mnist" and dataset.num_classes == 10
  assert dataset.input_shape == (28, 28, 1)
  assert dataset.x_train.shape[0] == dataset.y_train.shape[0] == 60000
  assert dataset.x_test.shape[0] == dataset.y_test.shape[0] == 10000
  np.testing.assert_array_equal(np.bincount(dataset.y_train, minlength=10), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(dataset.y_test, minlength=10), [1000] * 10)


def test_pixel_statistics_and_normalisation(dataset):
  spec = real.SPECS["fashion_mnist"]
  assert spec.mean == (REF_MEAN,) and spec.std == (REF_STD,)
  x_tr, y_tr = _raw("train")
  x_te, y_te = _raw("t10k")
  # Exact statistics of all 47M train pixels / 255, from the histogram of byte values.
  hist = np.bincount(x_tr.ravel(), minlength=256).astype(np.float64)
  v = np.arange(256) / 255.0
  mean = hist @ v / hist.sum()
  std = np.sqrt(hist @ (v - mean) ** 2 / hist.sum())
  assert abs(mean - PIXEL_MEAN) < 5e-5, mean   # 0.28604
  assert abs(std - PIXEL_STD) < 5e-5, std      # 0.35302
  # The loader: the same images and labels, normalised with REF's constants.
  np.testing.assert_array_equal(dataset.y_train, y_tr)
  np.testing.assert_array_equal(dataset.y_test, y_te)
  for loaded, raw in ((dataset.x_train, x_tr), (dataset.x_test, x_te)):
    assert loaded.dtype == np.float32
    expected = (raw[..., None].astype(np.float64) / 255.0 - REF_MEAN) / REF_STD
    rows = np.r_[0:500, len(raw) - 500:len(raw)]
    np.testing.assert_allclose(loaded[rows], expected[rows], atol=1e-5)
  norm_mean = np.mean(dataset.x_train, dtype=np.float64)
  norm_std = np.sqrt(np.mean(np.square(dataset.x_train, dtype=np.float64)) - norm_mean ** 2)
  assert abs(norm_mean - (mean - REF_MEAN) / REF_STD) < 1e-4, norm_mean
  assert abs(norm_std - std / REF_STD) < 1e-4, norm_std   # 1.1015: REF's std is not the pixel std


def test_one_global_iteration(config, dataset, monkeypatch, tmp_path):
  c = config.copy_and_resolve_references()
  c.num_global_iters = 1
  c.clients.local_iters = 1
  c.clients.participating = 2
  c.eval_batch_size = 500
  small_test = dataclasses.replace(dataset, x_test=dataset.x_test[:1000],
                                   y_test=dataset.y_test[:1000])
  requested = []

  def load(name, data_dir):
    requested.append((name, data_dir))
    return small_test

  monkeypatch.setattr(sources, "load_dataset", load)
  summary = train.train_and_evaluate(c, str(tmp_path))
  assert requested == [("fashion_mnist", FMNIST_DIR)]
  assert summary["global_iterations"] == 1 and summary["algorithm"] == "gas"
  assert 0.0 <= summary["final_accuracy"] <= 1.0
  assert np.isfinite(summary["wall_time_s"])
  assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1
