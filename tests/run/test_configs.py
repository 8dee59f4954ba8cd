"""Every config in configs/ loads, validates and runs, so that no config rots.

For every file in configs/ (a leading underscore marks a helper, not a config) and every argument
it documents (its `ARGS`, plus the empty argument):
  * it loads the way `--config=configs/FILE.py:ARG` loads it (ml_collections' config-file
    parser), passes `gas_jax.config.validate`, and its docstring gives the command and the arg;
  * its partition is feasible for the real dataset's size (`validate_with_data` and the
    partition itself on class-balanced labels of the real train-set size);
  * it runs ONE global iteration through `train.train_and_evaluate` on synthetic data of the
    dataset's real image shape (`sources.load_dataset` patched), with tiny sizes: T=1, E=1,
    40*K train examples, Dirichlet min_size 1. Arguments that lead to the same run as an earlier
    argument of the same file (same shape, model, split, K, C, generation and partition scheme)
    are not run again. Only fmnist runs in the default (non-slow) set (configs/cifar10.py runs
    in tests/run/test_real_runs.py); the 32x32 AlexNet runs take 15-60 s each on a 2-core CPU, so
    the others are marked slow.
The module turns on JAX's persistent compilation cache (in a temporary directory), so programs
shared between runs compile once.
"""
import importlib
import pathlib

import jax
import numpy as np
import pytest
from ml_collections.config_flags import config_flags

from helpers.cli_runs import ROOT
from gas_jax import config as config_lib
from gas_jax import train
from gas_jax.data import partition as partition_lib
from gas_jax.data import sources
from gas_jax.registry import MODELS

REPO = pathlib.Path(ROOT)
CONFIG_FILES = sorted(p.stem for p in (REPO / "configs").glob("*.py")
                      if not p.name.startswith("_"))
# Documented arguments of configs that do not list them in an ARGS tuple.
FALLBACK_ARGS = {"cifar10": ("shard2", "dir0.1")}
NO_ARGS = ("digits", "privacy_fmnist")   # config files that take no argument
# data.name -> (image shape, classes, real train-set size).
DATASETS = {"digits": ((8, 8, 1), 10, 1437, 360), "cifar10": ((32, 32, 3), 10, 50000, 10000),
            "cinic10": ((32, 32, 3), 10, 90000, 90000),
            "fashion_mnist": ((28, 28, 1), 10, 60000, 10000)}
AUGMENTED = ("cifar10", "cinic10")
# Files whose first run is not slow (digits: test_train_e2e; configs/cifar10.py itself runs one
# global iteration in the default suite through tests/run/test_real_runs.py, so here it is slow).
DEFAULT_RUNS = ("fmnist",)
BAD_ARGS = {
    "cinic10": ("shard", "shardx", "shard0", "dir", "dir0", "dir-1", "foo", "shard2:shard4",
                "shard2:"),
    "fmnist": ("iid2", "dir0.1:E10", "fashion"),
    "fig2_fmnist": ("maybe", "gen:nogen", "shard2"),
    "table2_local_iters": ("E0:shard2", "Ex:shard2", "E10:E20", "E10:shard2:mnist", "K10",
                           "E10;shard2"),
    "table3_clients": ("K5:shard2", "K0", "K50:shard2:svhn", "K50:K100", "E10"),
    "table4_split": ("L5", "L0", "L1:L2", "resnet18:L1", "l1"),
    "table5_models": ("vgg16:shard2", "vit_small:resnet18", "resnet18:shard2:dir0.1", "vit"),
}


def _module(name):
  return importlib.import_module(f"configs.{name}")


def _documented_args(name):
  return tuple(getattr(_module(name), "ARGS", FALLBACK_ARGS.get(name, ())))


def _load(name, arg=""):
  """Loads `configs/NAME.py[:ARG]` through ml_collections' --config parser (locked config)."""
  path = str(REPO / "configs" / f"{name}.py") + (f":{arg}" if arg else "")
  return config_flags.ConfigFileFlagParser(name="config").parse(path)


def _needs_missing_model(config):
  return config.model.name not in MODELS


def _all_cases():
  return [(name, arg) for name in CONFIG_FILES for arg in ("",) + _documented_args(name)]


def _tiny(config):
  """The test-size overrides; everything else stays as the config has it."""
  config.num_global_iters = 1
  config.clients.local_iters = 1
  config.data.min_size = 1
  config.eval_examples = 0          # the synthetic test split is smaller than a config's N
  return config


def _signature(config):
  shape = DATASETS[config.data.name][0]
  return (shape, config.model.name, config.model.split, config.clients.num,
          config.clients.participating, bool(config.generate), config.algorithm,
          config.data.partition)


def _run_cases():
  """The (file, arg) pairs that run: each file's first documented arg and every arg that
  leads to a different run, skipping configs whose model is not registered yet."""
  cases = []
  for name in CONFIG_FILES:
    seen = set()
    for arg in _documented_args(name) or ("",):
      config = _tiny(_load(name, arg))
      if _needs_missing_model(config):
        continue
      sig = _signature(config)
      if sig in seen:
        continue
      marks = () if (name in DEFAULT_RUNS and not seen) else (pytest.mark.slow,)
      seen.add(sig)
      cases.append(pytest.param(name, arg, id=f"{name}:{arg}", marks=marks))
  return cases


def test_every_config_file_is_covered():
  assert {"digits", "cifar10", "cinic10", "fmnist", "fig2_fmnist", "table2_local_iters",
          "table3_clients", "table4_split", "table5_models"} <= set(CONFIG_FILES)
  for name in CONFIG_FILES:
    if name not in NO_ARGS:
      assert _documented_args(name), f"configs/{name}.py documents no arguments (ARGS)"


@pytest.mark.parametrize("name,arg", _all_cases(), ids=lambda v: str(v))
def test_loads_and_validates(name, arg):
  config = _load(name, arg)
  assert config.data.dir == "", "configs must leave data.dir to the command line"
  assert config.data.name in DATASETS
  # Spec §4.1: crop + flip for CIFAR-like data only.
  assert config.data.augment == (config.data.name in AUGMENTED), config.data.augment
  if _needs_missing_model(config):
    with pytest.raises(config_lib.ConfigError, match="model.name"):
      config_lib.validate(config)
    pytest.skip(f"model {config.model.name!r} is not registered yet")
  config_lib.validate(config)
  # Same result as importing the module and calling get_config directly.
  assert config.to_dict() == _module(name).get_config(arg).to_dict()


@pytest.mark.parametrize("name,arg", _all_cases(), ids=lambda v: str(v))
def test_partition_fits_the_real_dataset(name, arg):
  config = _load(name, arg)
  _, classes, n_train, n_test = DATASETS[config.data.name]
  config_lib.validate_with_data(config, classes, n_train, n_test)
  labels = (np.arange(n_train) % classes).astype(np.int32)
  parts = partition_lib.partition(
      labels, config.clients.num, config.data.partition, num_classes=classes, seed=config.seed,
      shards=config.data.shards, alpha=config.data.alpha, min_size=config.data.min_size)
  assert len(parts) == config.clients.num
  assert min(p.size for p in parts) >= (config.data.min_size
                                        if config.data.partition == "dirichlet" else 1)


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_docstring_gives_command_and_args(name):
  doc = _module(name).__doc__
  assert f"python -m gas_jax.main --config=configs/{name}.py" in doc
  for arg in getattr(_module(name), "ARGS", ()):
    assert arg in doc, f"configs/{name}.py: argument {arg!r} is not in its docstring"


@pytest.mark.parametrize("name,arg", [(n, a) for n, args in BAD_ARGS.items() for a in args],
                         ids=lambda v: str(v))
def test_bad_argument_is_a_config_error(name, arg):
  with pytest.raises(config_lib.ConfigError, match="config argument"):
    _module(name).get_config(arg)
  with pytest.raises(config_lib.ConfigError, match="config argument"):
    _load(name, arg)


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
@pytest.mark.parametrize("name,arg", _run_cases())
def test_one_global_iteration(name, arg, compile_cache, monkeypatch, tmp_path):
  del compile_cache
  config = _tiny(_load(name, arg))
  shape, classes = DATASETS[config.data.name][:2]
  n_train = 40 * config.clients.num
  requested = []

  def fake_load(data_name, data_dir):
    requested.append((data_name, data_dir))
    return sources.synthetic_dataset(shape, classes, n_train, 100, seed=0)

  monkeypatch.setattr(sources, "load_dataset", fake_load)
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert requested == [(config.data.name, None)]
  assert summary["global_iterations"] == 1
  assert 0.0 <= summary["final_accuracy"] <= 1.0
  assert summary["algorithm"] == config.algorithm
  assert summary["generate"] == bool(config.generate)
