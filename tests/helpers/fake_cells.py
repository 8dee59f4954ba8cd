"""Finished grid cells made by hand (no training): run folders and packed files of
configs/digits.py, as launch/compare.py and launch/campaign.py lay them out."""
import json
import os

from configs import digits
from gas_jax import config as config_lib
from gas_jax import report


def cell_config(method: str, partition: str, seed: int, iters: int, lr: float = 0.01):
  """The config a compare.py cell of configs/digits.py has (with --config.num_global_iters)."""
  c = digits.get_config()
  c.num_global_iters, c.algorithm, c.seed, c.optimizer.lr = iters, method, seed, lr
  config_lib.apply_partition_arg(c, partition)
  return c


def cell_files(final: float, seed: int, iters: int):
  """(summary, rows) of a finished run of `iters` global iterations ending at `final`."""
  rows = [dict(global_iteration=i, simulated_time_s=(1.0 + seed) * i, wall_time_s=0.1 * i,
               test_accuracy=final * i / iters) for i in range(1, iters + 1)]
  summary = dict(final_accuracy=final, simulated_time_s=rows[-1]["simulated_time_s"],
                 wall_time_s=0.1 * iters, global_iterations=iters)
  return summary, rows


def fake_run(wd: str, final: float, seed: int, iters: int = 3, lr: float = 0.01,
             method=None, partition=None) -> None:
  """A finished run folder; method and partition default to the folder's names
  (ROOT/<partition>/<method>/seed<k>)."""
  os.makedirs(wd, exist_ok=True)
  p, m = wd.split(os.sep)[-3:-1]
  summary, rows = cell_files(final, seed, iters)
  with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  with open(os.path.join(wd, "summary.json"), "w") as f:
    json.dump(summary, f)
  c = cell_config(method or m, partition or p, seed, iters, lr)
  with open(os.path.join(wd, "config.json"), "w") as f:
    json.dump(c.to_dict(), f)


def fake_packed(wd: str, final: float, seed: int, iters: int = 3, wall_s=1.0) -> str:
  """The packed file of a finished cell whose folder would be `wd`; returns its path."""
  p, m = wd.split(os.sep)[-3:-1]
  summary, rows = cell_files(final, seed, iters)
  packed = dict(format=report.PACKED_FORMAT, config=cell_config(m, p, seed, iters).to_dict(),
                summary=summary, metrics=rows, cell=f"{p}/{m}/seed{seed}", cell_wall_s=wall_s)
  path = report.packed_path(wd)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(packed, f, sort_keys=True)
  return path
