"""The documented commands (docs/configuration.md, docs/reproducing.md) on real on-disk
formats: `python -m gas_jax.main --config=configs/cifar10.py --config.data.dir=D` with D
holding `cifar-10-batches-py/` or `cifar-10-batches-bin/`, and `configs/fmnist.py` with the idx
files (tiny fixtures written here, one global iteration with small K/C/B so that the run takes
seconds)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import real_files as fx
from helpers.cli_runs import ROOT

TINY = ["--config.num_global_iters=1", "--config.clients.num=5",
        "--config.clients.participating=2", "--config.clients.local_iters=1",
        "--config.clients.batch_size=8", "--config.eval_batch_size=16"]


def _cifar_py(d):
  folder = d / "cifar-10-batches-py"
  folder.mkdir()
  x, y = fx.images(0, 80), np.arange(80) % 10
  for i in range(5):
    fx.write_cifar_py(folder / f"data_batch_{i + 1}", x[16 * i:16 * i + 16], y[16 * i:16 * i + 16])
  fx.write_cifar_py(folder / "test_batch", fx.images(1, 20), np.arange(20) % 10)


def _cifar_bin(d):
  folder = d / "cifar-10-batches-bin"
  folder.mkdir()

  def records(x, y):
    return np.concatenate([y[:, None].astype(np.uint8),
                           x.transpose(0, 3, 1, 2).reshape(len(x), 3072)], axis=1).tobytes()
  x, y = fx.images(0, 80), np.arange(80) % 10
  for i in range(5):
    sl = slice(16 * i, 16 * i + 16)
    (folder / f"data_batch_{i + 1}.bin").write_bytes(records(x[sl], y[sl]))
  (folder / "test_batch.bin").write_bytes(records(fx.images(1, 20), np.arange(20) % 10))


def _fmnist_idx(d):
  fx.write_idx(d, fx.images(2, 80, (28, 28)), np.arange(80) % 10,
               fx.images(3, 20, (28, 28)), np.arange(20) % 10, gz=True)


@pytest.mark.slow   # CI budget (2026-12-01 timings); `python -m pytest -m slow` runs it
@pytest.mark.parametrize("config,write", [
    ("configs/cifar10.py", _cifar_py),
    pytest.param("configs/cifar10.py", _cifar_bin, marks=pytest.mark.slow),
    pytest.param("configs/fmnist.py", _fmnist_idx, marks=pytest.mark.slow)],
                         ids=["cifar10-py", "cifar10-bin", "fmnist-idx"])
def test_main_runs_on_the_files_people_have(tmp_path, config, write):
  data, work = tmp_path / "data", tmp_path / "run"
  data.mkdir()
  write(data)
  proc = subprocess.run(
      [sys.executable, "-m", "gas_jax.main", f"--config={config}", f"--config.data.dir={data}",
       f"--workdir={work}", *TINY], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((work / "summary.json").read_text())
  assert summary["global_iterations"] == 1 and 0.0 <= summary["final_accuracy"] <= 1.0
  assert json.loads((work / "config.json").read_text())["data"]["dir"] == str(data)
