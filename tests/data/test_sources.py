"""Tests for gas_jax.data.sources: the digits and synthetic datasets and the name lookup."""
import chex
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from gas_jax.data import sources


@pytest.fixture(scope="module")
def digits():
  return sources.load_dataset("digits", None)


def test_digits_shapes_and_dtypes(digits):
  assert digits.name == "digits"
  assert digits.x_train.shape == (1437, 8, 8, 1)
  assert digits.x_test.shape == (360, 8, 8, 1)
  assert digits.y_train.shape == (1437,) and digits.y_test.shape == (360,)
  assert digits.x_train.dtype == np.float32 and digits.x_test.dtype == np.float32
  assert digits.y_train.dtype == np.int32 and digits.y_test.dtype == np.int32
  assert digits.input_shape == (8, 8, 1)
  assert digits.num_classes == 10


def test_digits_train_normalised(digits):
  x = digits.x_train.astype(np.float64)
  assert abs(x.mean()) < 1e-5
  assert abs(x.std() - 1.0) < 1e-5
  # Test set uses the train statistics, so it is close to but not exactly standardised.
  assert abs(digits.x_test.astype(np.float64).mean()) < 0.1


def test_digits_matches_independent_pipeline(digits):
  raw = load_digits()
  x_tr, x_te, y_tr, y_te = train_test_split(
      raw.data / 16.0, raw.target, test_size=0.2, random_state=0, stratify=raw.target)
  mean, std = x_tr.mean(), x_tr.std()
  chex.assert_trees_all_close(
      (digits.x_train, digits.x_test),
      (((x_tr - mean) / std).reshape(-1, 8, 8, 1).astype(np.float32),
       ((x_te - mean) / std).reshape(-1, 8, 8, 1).astype(np.float32)),
      atol=1e-6)
  np.testing.assert_array_equal(digits.y_train, y_tr)
  np.testing.assert_array_equal(digits.y_test, y_te)
  # One scalar mean/std, not per pixel: a pixel that is always 0 maps to the same value.
  assert np.all(digits.x_train[:, 0, 0, 0] == digits.x_train[:, 0, 0, 0].min())
  np.testing.assert_allclose(digits.x_train[0, 0, 0, 0], -mean / std, rtol=1e-6)


def test_digits_stratified(digits):
  total = np.bincount(load_digits().target, minlength=10)
  test = np.bincount(digits.y_test, minlength=10)
  train = np.bincount(digits.y_train, minlength=10)
  np.testing.assert_array_equal(train + test, total)
  assert np.all(np.abs(test - np.round(0.2 * total)) <= 1)


def test_digits_labels_in_range(digits):
  for y in (digits.y_train, digits.y_test):
    assert y.min() == 0 and y.max() == 9
    assert set(np.unique(y)) == set(range(10))


def test_digits_deterministic():
  a = sources.load_dataset("digits", "/nonexistent")
  b = sources.load_dataset("digits", None)
  np.testing.assert_array_equal(a.x_train, b.x_train)
  np.testing.assert_array_equal(a.y_test, b.y_test)


def test_unknown_dataset_names_field():
  with pytest.raises(ValueError, match="data.name"):
    sources.load_dataset("no_such_dataset", None)


def test_synthetic_dataset():
  ds = sources.synthetic_dataset((4, 6, 3), 7, 50, 20, seed=3)
  assert ds.x_train.shape == (50, 4, 6, 3) and ds.x_test.shape == (20, 4, 6, 3)
  assert ds.input_shape == (4, 6, 3)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  np.testing.assert_array_equal(ds.y_train, np.arange(50) % 7)
  counts = np.bincount(ds.y_train, minlength=7)
  assert counts.max() - counts.min() <= 1
  again = sources.synthetic_dataset((4, 6, 3), 7, 50, 20, seed=3)
  other = sources.synthetic_dataset((4, 6, 3), 7, 50, 20, seed=4)
  np.testing.assert_array_equal(ds.x_train, again.x_train)
  assert not np.array_equal(ds.x_train, other.x_train)


def test_synthetic_registered_defaults():
  ds = sources.load_dataset("synthetic", None)
  assert ds.name == "synthetic"
  assert ds.x_train.shape == (1000, 8, 8, 1) and ds.x_test.shape == (200, 8, 8, 1)
  assert ds.num_classes == 10
  np.testing.assert_array_equal(np.bincount(ds.y_train), np.full(10, 100))
