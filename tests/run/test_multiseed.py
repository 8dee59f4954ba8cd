"""The runs axis (`config.seeds`): each seed's outputs equal its separate run's.

Digits with generation on, 3 global iterations, seeds 0, 1, 2 (the host loop of the default suite:
seeds 0, 1): vmapped in one program (event by
event, and cohorts of every seed per round) and as a host loop, against three separate
`--config.seed=s` runs (event by event) - identical test_accuracy columns,
losses within 1e-5 relative, and the final models (theta_glob, the in-flight slots, phi) within
1e-5 relative per tensor. Also: a seed folder resumes as a single run, and bad seeds are refused.
"""
import json
import os

import numpy as np
import pytest

from configs import digits
from gas_jax import config as config_lib
from gas_jax import train
from helpers import same_run as eq

SEEDS = (0, 1, 2)


def _config(**kw):
  c = digits.get_config()
  c.num_global_iters = eq.T
  c.clients.local_iters = 4
  c.checkpoint_every = eq.T
  for k, v in kw.items():
    c[k] = v
  return c


@pytest.fixture(autouse=True, scope="module")
def _cache(compile_cache):
  """Every run here has the same shapes: each program compiles once (persistent cache)."""
  yield


class _Separate:
  """`separate / "seed<s>"`: the folder of seed s's separate run, made on first use."""

  def __init__(self, root):
    self.root = root

  def __truediv__(self, name):
    path = self.root / name
    if not path.exists():
      train.train_and_evaluate(_config(seed=int(name[len("seed"):])), str(path))
    return path


@pytest.fixture(scope="module")
def separate(tmp_path_factory):
  return _Separate(tmp_path_factory.mktemp("separate"))


@pytest.mark.parametrize("vmapped,cohort", [
    # vmapped: slow on the CPU (a host loop is the CPU default; CI budget, 2026-12-01)
    pytest.param(1, 1, marks=pytest.mark.slow), pytest.param(1, 0, marks=pytest.mark.slow),
    (0, 1)],   # cohorts: see the resume test
                         ids=["vmapped", "vmapped_cohorts", "loop"])
def test_seeds_equal_separate_runs(tmp_path, separate, vmapped, cohort):
  # The loop (the default suite's case) with seeds 0, 1: two separate runs instead of three.
  seeds = SEEDS if vmapped else SEEDS[:2]
  c = _config(seeds=seeds)
  c.execution.vmap_seeds = vmapped
  c.execution.cohort_size = cohort
  summary = train.train_and_evaluate(c, str(tmp_path))
  assert summary["seeds"] == list(seeds)
  finals = []
  # Vmapped over seeds, XLA's CPU backend sums the matmuls (with a batch axis more) in another
  # order: one tensor ends 1.6e-5 (relative) from the separate runs after 3 global iterations
  # (identical test_accuracy columns, losses within 1e-5). One vmapped server update is
  # compared with separate ones in tests/runners/test_seeds_steps.py.
  rtol = 2e-5 if vmapped else 1e-5
  for s in seeds:
    eq.assert_same_run(str(separate / f"seed{s}"), str(tmp_path / f"seed{s}"), rtol)
    with open(tmp_path / f"seed{s}" / "summary.json") as f:
      finals.append(json.load(f)["final_accuracy"])
    with open(tmp_path / f"seed{s}" / "config.json") as f:
      cfg = json.load(f)
    assert cfg["seed"] == s and cfg["seeds"] == []
  np.testing.assert_allclose(summary["final_accuracy_mean"], np.mean(finals))
  np.testing.assert_allclose(summary["final_accuracy_std"], np.std(finals))
  # The seeds really differ (partitions, schedules, initialisations).
  cols = [[r["test_loss"] for r in eq.columns(str(tmp_path / f"seed{s}"))] for s in seeds]
  assert len({tuple(col) for col in cols}) == len(seeds)


@pytest.mark.slow
def test_seed_folder_resumes_as_a_single_run(tmp_path, separate):
  """Seeds (1,) for T=2, then its folder continued to T=3 as a single run == the T=3 run."""
  c = _config(seeds=(1,))
  c.num_global_iters = 2
  c.execution.vmap_seeds = 0
  train.train_and_evaluate(c, str(tmp_path))
  c = _config(seed=1)
  train.train_and_evaluate(c, str(tmp_path / "seed1"))
  rows = eq.columns(str(tmp_path / "seed1"))
  assert len(rows) == eq.T
  eq.assert_same_run(str(separate / "seed1"), str(tmp_path / "seed1"))


@pytest.mark.parametrize("seeds,algorithm,match", [
    ((0, 0), "gas", "distinct"), ((0, -1), "gas", "integers >= 0"),
    ((0, 1), "fedavg", "gas and gas_nogen")])
def test_bad_seeds_are_refused(tmp_path, seeds, algorithm, match):
  c = _config(seeds=seeds, algorithm=algorithm)
  with pytest.raises(config_lib.ConfigError, match=r"seeds=.*" + match):
    train.train_and_evaluate(c, str(tmp_path))
  assert not os.listdir(tmp_path)


@pytest.mark.slow     # ~28 s each; the default suite keeps tests/run/test_checkpoint.py's resume test
@pytest.mark.parametrize("vmapped,cohort", [(1, 0), (0, 1), (1, 1)],
                         ids=["vmapped_cohorts", "loop", "vmapped"])
def test_multiseed_run_resumes_exactly(tmp_path, separate, vmapped, cohort):
  """Seeds 0,1 to T=2, then the same workdir to T=3: it resumes from WORKDIR/checkpoints
  (seeds that stopped at different ticks continue, pending cohort look-aheads are restored)
  and equals the separate T=3 runs. (Two seeds: vmapped convolutions are slow on the CPU.)"""
  seeds = SEEDS[:2]
  c = _config(seeds=seeds)
  c.execution.vmap_seeds = vmapped
  c.execution.cohort_size = cohort
  c.num_global_iters = 2
  train.train_and_evaluate(c, str(tmp_path))
  assert os.path.isdir(tmp_path / "checkpoints")
  c.num_global_iters = eq.T
  train.train_and_evaluate(c, str(tmp_path))
  rtol = 2e-5 if vmapped else 1e-5    # see test_seeds_equal_separate_runs
  for s in seeds:
    eq.assert_same_run(str(separate / f"seed{s}"), str(tmp_path / f"seed{s}"), rtol)


def test_seeds_follow_the_evaluation_cadence(tmp_path):
  """eval_every=2, T=3, seeds 0 and 1 in one program: each seed folder evaluates rows 2 and 3,
  as the separate run does (seed 1 here), and the summaries average those two evaluations."""
  def tiny(**kw):
    c = _config(num_global_iters=3, eval_every=2, **kw)
    c.clients.num, c.clients.participating, c.clients.local_iters = 5, 2, 2
    c.execution.vmap_seeds = 0
    return c
  summary = train.train_and_evaluate(tiny(seeds=(0, 1)), str(tmp_path / "axis"))
  train.train_and_evaluate(tiny(seed=1), str(tmp_path / "single"))
  assert summary["eval_every"] == 2 and summary["final_accuracy_evals"] == 2
  for s in (0, 1):
    rows = eq.columns(str(tmp_path / "axis" / f"seed{s}"))
    assert [r["global_iteration"] for r in rows if r["test_accuracy"] is not None] == [2, 3]
    np.testing.assert_allclose(summary["final_accuracy"][s],
                               np.mean([rows[1]["test_accuracy"], rows[2]["test_accuracy"]]))
  axis, single = (eq.columns(str(tmp_path / d)) for d in ("axis/seed1", "single"))
  assert [r["test_accuracy"] for r in axis] == [r["test_accuracy"] for r in single]
  assert [r["simulated_time_s"] for r in axis] == [r["simulated_time_s"] for r in single]
