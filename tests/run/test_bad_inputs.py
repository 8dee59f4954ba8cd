"""One line, nothing written: every bad input ends the program with a single `error: ...` line
naming what is wrong, before any file is written (issue "Never lose or mix a run").

In-process through `gas_jax.main.run` (the program's error boundary) for config values, resumes
with another config, broken data files and a full disk; the flag-level cases (unknown keys,
config file arguments, missing config files) as subprocesses of `python -m gas_jax.main`.
"""
import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import cli_runs

from configs import digits
from helpers.cli_runs import ROOT, short_digits_config
from gas_jax import checkpoint
from gas_jax import main as main_lib
from gas_jax import metrics as metrics_lib
from gas_jax import weighting

INF = float("inf")


_config = short_digits_config


def _error(config, workdir, overwrite=False) -> str:
  with pytest.raises(SystemExit) as e:
    main_lib.run(config, str(workdir), overwrite)
  msg = str(e.value.code)
  assert msg.startswith("error: ") and "\n" not in msg and "Traceback" not in msg, msg
  return msg


# (overrides, text the message must contain): refused before any file is written.
BAD_VALUES = [
    (dict(seed=-1), "seed"),
    (dict(algorithm="nosuch"), "algorithm"),
    (dict(num_global_iters=0), "num_global_iters"),
    (dict(data__name="nosuch"), "data.name"),
    (dict(data__partition="bogus"), "data.partition"),
    (dict(data__shards=0), "data.shards"),
    (dict(data__alpha=0.0), "data.alpha"),
    (dict(data__alpha=float("nan")), "data.alpha"),
    (dict(clients__num=0), "clients.num"),
    (dict(clients__participating=50), "clients.participating"),
    (dict(clients__local_iters=0), "clients.local_iters"),
    (dict(clients__momentum="nosuch"), "clients.momentum"),
    (dict(clients__aggregation="nosuch"), "clients.aggregation"),
    (dict(optimizer__name="nosuch"), "optimizer.name"),
    (dict(optimizer__lr=INF), "optimizer.lr"),
    (dict(optimizer__lr=-1.0), "optimizer.lr"),
    (dict(optimizer__lr=float("nan")), "optimizer.lr"),
    (dict(optimizer__momentum=INF), "optimizer.momentum"),
    (dict(optimizer__weight_decay=INF), "optimizer.weight_decay"),
    (dict(optimizer__clip_norm=-1.0), "optimizer.clip_norm"),
    (dict(optimizer__decay="nosuch"), "optimizer.decay"),
    (dict(model__name="nosuch"), "model.name"),
    (dict(model__split="nosuch"), "split"),
    (dict(weighting__fn="nosuch"), "weighting.fn"),
    (dict(weighting__a=0.0), "weighting.a"),
    (dict(weighting__b=1e5), "weighting.b"),
    (dict(weighting__b=INF), "weighting.b"),
    (dict(stats__method="nosuch"), "stats.method"),
    (dict(stats__covariance="lowrank", stats__method="cholesky"), "stats.covariance"),
    (dict(stats__rank=0), "stats.rank"),
    (dict(stats__refresh_every=2), "stats.refresh_every"),
    (dict(stats__jitter=INF), "stats.jitter"),
    (dict(time__compute_max=INF), "time.compute_max"),
    (dict(time__compute_min=0.0), "time.compute_min"),
    (dict(time__compute_max=1e8), "time.compute_max"),
    (dict(time__distance_max_km=INF), "time.distance_max_km"),
    (dict(time__distance_max_km=0.05), "time.distance_max_km"),
    (dict(execution__cohort_size=-2), "execution.cohort_size"),
    (dict(execution__server_chunk=-2), "execution.server_chunk"),
    (dict(execution__devices=-1), "execution.devices"),
    (dict(eval_batch_size=0), "eval_batch_size"),
    (dict(checkpoint_every=0), "checkpoint_every"),
    (dict(log_every_s=INF), "log_every_s"),
    (dict(algorithm="s2fl", s2fl__num_groups=3), "s2fl.num_groups"),
    (dict(seeds=(0, 1), algorithm="fedavg"), "seeds"),
    (dict(seeds=(0, 0)), "seeds"),
    # clients that come and go (issue #29, docs/scenarios.md)
    (dict(system__speed="nosuch"), "system.speed"),
    (dict(system__sigma=-1.0), "system.sigma"),
    (dict(system__redraw_s=0.0), "system.redraw_s"),
    (dict(system__availability="nosuch"), "system.availability"),
    (dict(system__mean_online_s=0.0), "system.mean_online_s"),
    (dict(system__mean_offline_s=-2.0), "system.mean_offline_s"),
    (dict(system__dropout=1.5), "system.dropout"),
    (dict(system__dropout=-0.1), "system.dropout"),
    (dict(system__dropout=1.0), "system.dropout"),
    (dict(system__round_deadline_s=-1.0), "system.round_deadline_s"),
    (dict(system__round_deadline_s=0.0), "system.round_deadline_s"),
    (dict(system__availability="trace", system__trace="/no/such/trace.json"), "system.trace"),
    (dict(seeds=(0, 1), system__dropout=0.1), "seeds"),
    # checked with the data, still before anything is written
    (dict(clients__num=1000), "clients.num"),
    (dict(clients__batch_size=100000), "clients.batch_size"),
    (dict(clients__num=7, clients__participating=5, data__shards=3), "data.shards"),
    (dict(data__partition="dirichlet", data__min_size=1000), "data.min_size"),
    (dict(time__distance_min_km=1e300, time__distance_max_km=1e300), "time.distance_max_km"),
    (dict(time__compute_min=1e-300, time__compute_max=1e-300), "time.compute_min"),
]


@pytest.mark.parametrize("overrides, field", BAD_VALUES,
                         ids=[",".join(f"{k}={v}" for k, v in o.items()) for o, _ in BAD_VALUES])
def test_bad_value_one_line_nothing_written(tmp_path, overrides, field):
  workdir = tmp_path / "run"
  msg = _error(_config(**overrides), workdir)
  assert field in msg, msg
  assert not workdir.exists(), os.listdir(workdir)


BAD_TRACES = [("t.json", "", "empty"),
              ("t.json", '{"clients": {"0": []}}', "no client is ever available"),
              ("t.json", '{"clients": {"20": [[0, 1]]}}', "unknown client '20'"),
              ("t.csv", "client,start,end\n0,0,2\n0,1,3\n", "line 3: client 0's interval"),
              ("t.csv", "client,start,end\n0,3,-1\n", "line 2: interval [3, -1)")]


@pytest.mark.parametrize("name, text, needle", BAD_TRACES)
def test_bad_trace_one_line_nothing_written(tmp_path, name, text, needle):
  trace = tmp_path / name
  trace.write_text(text)
  workdir = tmp_path / "run"
  msg = _error(_config(system__availability="trace", system__trace=str(trace)), workdir)
  assert needle in msg and str(trace) in msg, msg
  assert not workdir.exists()


@pytest.mark.parametrize("workdir, text", [("", "workdir"), ("afile/run", "not a writable")])
def test_bad_workdir(tmp_path, monkeypatch, workdir, text):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "afile").write_text("x")
  assert text in _error(_config(), workdir)
  assert sorted(os.listdir(tmp_path)) == ["afile"]   # no stray checkpoints/ in the cwd


_digest = cli_runs.digest


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, compile_cache):
  """A finished 2-iteration digits run (the module's later runs of the same shapes reuse its
  compiled programs through the persistent compilation cache)."""
  del compile_cache
  workdir = str(tmp_path_factory.mktemp("finished") / "run")
  main_lib.run(_config(num_global_iters=2), workdir)
  return workdir


CHANGED = [
    (dict(seed=1), "seed: 0 -> 1"),
    (dict(clients__num=10), "clients.num"),
    (dict(clients__participating=5), "clients.participating"),
    (dict(model__name="cnn_small_bn"), "model.name"),
    (dict(algorithm="fedavg"), "algorithm"),
    (dict(num_global_iters=3, optimizer__lr=0.05), "optimizer.lr: 0.01 -> 0.05"),
    (dict(num_global_iters=1), "num_global_iters: 2 -> 1"),
    (dict(seeds=(0, 1)), "seeds"),
]


@pytest.mark.parametrize("overrides, text", CHANGED,
                         ids=[",".join(f"{k}={v}" for k, v in o.items()) for o, _ in CHANGED])
def test_changed_config_refused_old_files_intact(finished_run, tmp_path, overrides, text):
  workdir = str(tmp_path / "run")
  shutil.copytree(finished_run, workdir)
  before = _digest(workdir)
  msg = _error(_config(**{"num_global_iters": 2, **overrides}), workdir)
  assert text in msg and "--overwrite" in msg, msg
  assert _digest(workdir) == before


def test_finished_run_rerun_is_a_no_op(finished_run, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(finished_run, workdir)
  before = _digest(workdir)
  summary = main_lib.run(_config(num_global_iters=2), workdir)
  assert _digest(workdir) == before
  assert summary["mean_iter_wall_s"] is not None and summary["global_iterations"] == 2


def test_finish_interrupted_before_the_summary_completes(finished_run, tmp_path):
  """Killed after the final checkpoint, before summary.json: the rerun restores the end and
  writes the summary, with the iteration timings the checkpoint kept (not null)."""
  workdir = str(tmp_path / "run")
  shutil.copytree(finished_run, workdir)
  with open(os.path.join(workdir, "summary.json")) as f:
    want = json.load(f)
  os.remove(os.path.join(workdir, "summary.json"))
  summary = main_lib.run(_config(num_global_iters=2), workdir)
  assert summary["mean_iter_wall_s"] is not None and summary["first_iter_wall_s"] is not None
  for key in ("final_accuracy", "best_accuracy", "global_iterations", "simulated_time_s",
              "mean_iter_wall_s", "first_iter_wall_s", "wall_time_s"):
    assert summary[key] == want[key], key


def test_raised_T_resumes_like_the_longer_run(finished_run, tmp_path):
  """The finished T=2 run continued to T=3 (from its checkpoint) equals a T=3 run from the
  start: the default suite's instance of "resumed = uninterrupted" (the processes, SIGKILL
  included: tests/run/test_checkpoint.py and tests/run/test_run_safety.py, slow)."""
  workdir, whole = str(tmp_path / "run"), str(tmp_path / "whole")
  shutil.copytree(finished_run, workdir)
  main_lib.run(_config(num_global_iters=3), workdir)
  main_lib.run(_config(num_global_iters=3), whole)
  assert cli_runs.rows(workdir) == cli_runs.rows(whole) and len(cli_runs.rows(whole)) == 3
  # Resumed, not restarted: the first two rows are the finished run's, wall times and all.
  assert metrics_lib.read_rows(workdir)[:2] == metrics_lib.read_rows(finished_run)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["num_global_iters"] == 3


def test_overwrite_moves_the_old_run_aside(finished_run, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(finished_run, workdir)
  before = _digest(workdir)
  main_lib.run(_config(num_global_iters=1, seed=1), workdir, overwrite=True)
  aside = [d for d in os.listdir(tmp_path) if d.startswith("run.replaced-")]
  assert len(aside) == 1 and _digest(tmp_path / aside[0]) == before
  assert metrics_lib.read_rows(workdir)[0]["global_iteration"] == 1
  assert len(metrics_lib.read_rows(workdir)) == 1


def test_cifar_batch_with_a_huge_length_field(tmp_path):
  """A python batch beginning with byte 0x96 (pickle BYTEARRAY8 with an 8-byte length) made
  pickle allocate petabytes: a bare MemoryError. Now one line naming the file."""
  folder = tmp_path / "data" / "cifar-10-batches-py"
  folder.mkdir(parents=True)
  for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    (folder / name).write_bytes(b"\x96" + b"\xff" * 8 + b"garbage")
  workdir = tmp_path / "run"
  msg = _error(_config(data__name="cifar10", data__dir=str(tmp_path / "data")), workdir)
  assert "data_batch_1" in msg and "not a readable CIFAR python batch" in msg, msg
  assert not workdir.exists()


@pytest.mark.parametrize("where", [
    "metrics", pytest.param("checkpoint", marks=pytest.mark.slow)])   # CI budget
def test_full_disk_one_line_and_resumable(tmp_path, monkeypatch, where):
  def no_space(*args, **kwargs):
    del args, kwargs
    if where == "metrics":
      raise OSError(errno.ENOSPC, "No space left on device", "metrics.jsonl")
    raise ValueError("RESOURCE_EXHAUSTED: orbax could not write: No space left on device")

  if where == "metrics":
    monkeypatch.setattr(metrics_lib, "atomic_write", no_space)
  else:
    monkeypatch.setattr(checkpoint.Checkpointer, "save", no_space)
  msg = _error(_config(), tmp_path / "run")
  assert "no space left" in msg and "resume" in msg, msg


def test_huge_exponent_weighting_stays_finite():
  """weighting.b=1000 (OverflowError before tags were relative) gives finite tags."""
  c = _config(weighting__fn="exp", weighting__b=1000.0)

  class Ev:
    progress, max_progress, prev_max_progress, counter_tag = 5000, 6000, 5999, 1

  tag, shift = weighting.tag(c, Ev)
  assert tag == 0.0 and shift == 1000.0


def _cli(*args, cwd=ROOT):
  proc = subprocess.run([sys.executable, "-m", "gas_jax.main", *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=ROOT))
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "Warning" not in ln]
  return proc.returncode, lines


CLI = [
    (["--config=configs/digits.py", "--config.nosuch=1"], "no field 'nosuch'"),
    (["--config=configs/digits.py", "--config.optimizer.lrr=1"], 'Did you mean "lr"'),
    (["--config=configs/digits.py", "--config.optimizer.lr=abc"], "--config.optimizer.lr=abc"),
    (["--config=configs/cifar10.py:bogus"], "'bogus' is not one of the accepted tokens"),
    (["--config=configs/digits.py:bogus"], "'bogus' is not one of the accepted tokens"),
    (["--config=configs/nosuch.py"], "no such config file 'configs/nosuch.py'"),
]


@pytest.mark.parametrize("args, text", CLI, ids=[a[-1] for a, _ in CLI])
def test_cli_flag_errors(tmp_path, args, text):
  workdir = tmp_path / "run"
  code, lines = _cli(*args, f"--workdir={workdir}")
  assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), lines
  assert text in lines[0], lines
  assert not workdir.exists()


def test_cli_relative_config_from_another_directory(tmp_path):
  code, lines = _cli("--config=configs/digits.py", f"--workdir={tmp_path / 'run'}", cwd=tmp_path)
  assert code == 1 and len(lines) == 1, lines
  assert "no such config file" in lines[0] and str(tmp_path) in lines[0], lines


def test_digits_partition_argument_is_applied():
  """`digits.py:dir0.1` was silently ignored; now it sets the partition like cifar10.py's."""
  c = digits.get_config("dir0.1")
  assert (c.data.partition, c.data.alpha) == ("dirichlet", 0.1)
  assert digits.get_config().data.partition == "shard"
