"""gas_jax.workdir (run identity, lock, move aside), checkpoint mismatch vs corruption, output file
permissions and the progress heartbeat (on a fake clock: a heartbeat only when no line and no
finished iteration came within log_every_s)."""
import json
import os
import stat
import time
import types

import jax.numpy as jnp
import numpy as np
import pytest

from gas_jax import checkpoint
from gas_jax import metrics as metrics_lib
from gas_jax import workdir as workdir_lib
from gas_jax.config import RunError

STORED = dict(seed=0, seeds=[], num_global_iters=6, optimizer=dict(lr=0.01, momentum=0.9),
              execution=dict(cohort_size=-1, vmap_seeds=-1, compilation_cache_dir=""),
              checkpoint_every=10, generate=True)


def _with(**changes):
  d = json.loads(json.dumps(STORED))
  for key, value in changes.items():
    node, parts = d, key.split("__")
    for p in parts[:-1]:
      node = node[p]
    node[parts[-1]] = value
  return d


def test_same_config_and_resumable_fields_are_accepted():
  assert workdir_lib.differences(STORED, STORED) == []
  changed = _with(num_global_iters=9, checkpoint_every=1, execution__cohort_size=4,
                  execution__compilation_cache_dir="/tmp/c")
  assert workdir_lib.differences(STORED, changed, done_iters=6) == []
  assert workdir_lib.differences(STORED, _with(seeds=()), 0) == []   # tuple vs stored list


def test_the_execution_plan_and_new_execution_fields_never_block_a_resume():
  """config.json's resolved plan follows the machine; `execution.*` fields added later (or
  absent from an older config.json) are how the run executes, not what it computes."""
  stored = dict(json.loads(json.dumps(STORED)),
                execution_plan=dict(backend="gpu", cohort_size=0, server_chunk=0))
  new = _with(execution__conv_impl="im2col", execution__sampler="loop",
              execution__cpu_threads=1)
  assert workdir_lib.differences(stored, new, 0) == []
  assert workdir_lib.differences(stored, _with(optimizer__lr=0.5), 0) == [
      "optimizer.lr: 0.01 -> 0.5"]


def test_fields_that_change_the_past_are_named():
  diff = workdir_lib.differences(STORED, _with(optimizer__lr=0.05, seed=1, generate=1))
  assert diff == ["generate: True -> 1", "optimizer.lr: 0.01 -> 0.05", "seed: 0 -> 1"]
  assert workdir_lib.differences(STORED, _with(optimizer__momentum=0.0)) == [
      "optimizer.momentum: 0.9 -> 0.0"]
  assert workdir_lib.differences(STORED, _with(execution__vmap_seeds=1)) == []
  new = _with()
  new["extra"] = 1
  del new["optimizer"]["momentum"]
  assert workdir_lib.differences(STORED, new) == [
      "extra: (not in the stored config) -> 1", "optimizer.momentum: 0.9 -> (not in this config)"]


def test_eval_every_is_fixed_for_a_run_and_report_targets_are_not():
  """eval_every decides which rows hold a test accuracy (so final_accuracy and
  time_to_accuracy): a change is refused. A config.json from before it resumes with its default
  (1). report.targets only say how the summary reads the rows: free to change."""
  stored = _with(eval_every=2, report=dict(targets=[0.5, 0.6]))
  assert workdir_lib.differences(stored, _with(eval_every=4, report=dict(targets=[0.5]))) == [
      "eval_every: 2 -> 4"]
  assert workdir_lib.differences(STORED, _with(eval_every=1, report=dict(targets=[0.7]))) == []
  assert workdir_lib.differences(STORED, _with(eval_every=3)) == [
      "eval_every: (not in the stored config) -> 3"]


def test_fewer_iterations_only_down_to_those_done():
  assert workdir_lib.differences(STORED, _with(num_global_iters=4), done_iters=3) == []
  assert workdir_lib.differences(STORED, _with(num_global_iters=4), done_iters=5) == [
      "num_global_iters: 6 -> 4 (the run has already done 5 iterations)"]


def test_check_same_run_reads_config_json(tmp_path):
  workdir_lib.check_same_run(str(tmp_path), STORED)           # nothing stored: fine
  (tmp_path / "config.json").write_text(json.dumps(STORED))
  workdir_lib.check_same_run(str(tmp_path), _with(num_global_iters=7))
  with pytest.raises(RunError, match=r"holds a different run \(optimizer.lr: 0.01 -> 0.5\)"):
    workdir_lib.check_same_run(str(tmp_path), _with(optimizer__lr=0.5))
  (tmp_path / "config.json").write_text("{broken")
  with pytest.raises(RunError, match="unreadable"):
    workdir_lib.check_same_run(str(tmp_path), STORED)


def test_lock_refuses_a_second_holder_and_names_it(tmp_path):
  wd = str(tmp_path / "run")
  with workdir_lib.WorkdirLock(wd):
    with pytest.raises(RunError, match=rf"in use by process {os.getpid()} on"):
      with workdir_lib.WorkdirLock(wd):
        pass
  with workdir_lib.WorkdirLock(wd):   # released: can be taken again
    pass
  with workdir_lib.WorkdirLock(str(tmp_path / "other"), enabled=False):
    assert not (tmp_path / "other").exists()


def test_move_aside_keeps_everything(tmp_path):
  wd = tmp_path / "run"
  assert workdir_lib.move_aside(str(wd)) is None
  (wd / "checkpoints" / "3").mkdir(parents=True)
  (wd / "metrics.jsonl").write_text("{}\n")
  (wd / ".lock").write_text("")
  aside = workdir_lib.move_aside(str(wd))
  assert os.path.basename(aside).startswith("run.replaced-")
  assert sorted(os.listdir(aside)) == ["checkpoints", "metrics.jsonl"]
  assert os.listdir(wd) == [".lock"]


def _state(n=3):
  return dict(a=jnp.arange(n, dtype=jnp.float32), b=dict(c=jnp.zeros((2, 2))), t=jnp.int32(1))


def test_checkpoint_of_another_shape_is_refused_and_kept(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path), 2)
  ckpt.save(1, _state(3), dict(x=1))
  ckpt.close()
  ckpt = checkpoint.Checkpointer(str(tmp_path), 2)
  with pytest.raises(RunError, match=r"a has shape \(3,\) there and \(4,\) here"):
    ckpt.restore_latest(_state(4))
  assert ckpt.all_steps() == [1]
  step, state, host = ckpt.restore_latest(_state(3))
  assert step == 1 and host == dict(x=1)
  np.testing.assert_array_equal(state["a"], np.arange(3))
  extra = dict(_state(3), d=jnp.ones(5))
  with pytest.raises(RunError, match="3 arrays there, 4 here"):
    ckpt.restore_latest(extra)
  ckpt.close()


def test_unreadable_checkpoint_is_moved_aside_not_deleted(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path), 3)
  ckpt.save(1, _state(), dict(x=1))
  ckpt.save(2, _state(), dict(x=2))
  for root, _, files in os.walk(tmp_path / "checkpoints" / "2" / "state"):
    for name in files:
      (tmp_path / root / name).write_bytes(b"garbage")
  step, _, host = ckpt.restore_latest(_state())
  assert (step, host) == (1, dict(x=1))
  aside = os.listdir(tmp_path / "checkpoints.unreadable")
  assert len(aside) == 1 and aside[0].startswith("2-")
  assert ckpt.all_steps() == [1]
  for root, _, files in os.walk(tmp_path / "checkpoints" / "1"):   # now the last one too
    for name in files:
      (tmp_path / root / name).write_bytes(b"garbage")
  with pytest.raises(RunError, match="no checkpoint in .* could be read"):
    ckpt.restore_latest(_state())     # never a silent fresh start over the run's files
  assert len(os.listdir(tmp_path / "checkpoints.unreadable")) == 2
  ckpt.close()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_output_files_get_the_umask_permissions(tmp_path, monkeypatch, umask, mode):
  monkeypatch.setattr(metrics_lib, "_UMASK", umask)   # read once at import
  metrics_lib.atomic_write(str(tmp_path / "summary.json"), "{}\n")
  assert stat.S_IMODE(os.stat(tmp_path / "summary.json").st_mode) == mode


def test_heartbeat_logs_while_an_iteration_runs(monkeypatch):
  lines = []
  monkeypatch.setattr(metrics_lib.logging, "info", lambda fmt, *a: lines.append(fmt % a))
  progress = metrics_lib.Progress(total=3, every_s=0.05)
  with progress.heartbeat():
    time.sleep(0.4)          # a long first iteration (compilation)
  beats = [ln for ln in lines if "still running" in ln]
  assert beats and beats[0].startswith("iteration 1/3 still running (compiling"), lines
  progress.update(dict(global_iteration=3, test_accuracy=1.0, test_loss=0.0,
                       simulated_time_s=1.0, wall_time_s=1.0))
  assert "ETA 0 s" in lines[-1]
  assert not progress.beat()   # finished: no more heartbeats


def test_old_config_without_system_section_resumes_only_at_the_defaults():
  """A config.json from before issue #29 (no `system`) continues when every system.* field is
  at its default; any scenario is a different run."""
  from configs import digits  # noqa: PLC0415
  new = digits.get_config().to_dict()
  old = {k: v for k, v in new.items() if k != "system"}
  assert workdir_lib.differences(old, new) == []
  for field, value in (("dropout", 0.1), ("availability", "markov"), ("speed", "fixed"),
                       ("redraw_s", 5.0), ("round_deadline_s", 2.0)):
    changed = digits.get_config()
    changed.system[field] = value
    diff = workdir_lib.differences(old, changed.to_dict())
    assert any(d.startswith(f"system.{field}:") for d in diff), (field, diff)


def _timeline(monkeypatch, total, every_s, iteration_s, beat_every=1.0):
  """Progress on a fake clock: iteration i (1-based) ends at sum(iteration_s[:i]); the heartbeat
  thread's `beat()` runs every `beat_every` s (as `heartbeat()` does). Returns (time, line)."""
  now = [0.0]
  lines = []
  monkeypatch.setattr(metrics_lib, "time", types.SimpleNamespace(time=lambda: now[0]))
  monkeypatch.setattr(metrics_lib.logging, "info",
                      lambda fmt, *a: lines.append((round(now[0], 2), fmt % a)))
  progress = metrics_lib.Progress(total=total, every_s=every_s)
  ends = np.cumsum(iteration_s)
  beats = np.arange(beat_every, ends[-1] + beat_every, beat_every)
  events = sorted([(t, 1, i + 1) for i, t in enumerate(ends)] + [(t, 0, 0) for t in beats])
  for t, kind, i in events:
    now[0] = float(t)
    if kind:
      progress.update(dict(global_iteration=i, test_accuracy=0.5, test_loss=1.0,
                           simulated_time_s=float(i), wall_time_s=float(t)))
    else:
      progress.beat()
  return lines


def test_no_heartbeat_while_iterations_finish_within_log_every_s(monkeypatch):
  """The default digits job: a 12 s first iteration (compilation), then ~1 s each. Its one
  heartbeat is in the first iteration; the others are progress lines at least 10 s apart."""
  lines = _timeline(monkeypatch, 60, 10.0, [12.0] + [1.04] * 59)
  beats = [(t, ln) for t, ln in lines if "still running" in ln]
  assert beats == [(10.0, "iteration 1/60 still running (compiling and running): 10 s since "
                          "this process started")], lines
  progress = [(t, ln) for t, ln in lines if "still running" not in ln]
  assert [ln.split()[1] for _, ln in progress] == [
      "1/60", "11/60", "21/60", "31/60", "41/60", "51/60", "60/60"]   # every 10 / 1.04 s
  assert all(b - a >= 10.0 for (a, _), (b, _) in zip(progress[:-2], progress[1:-1]))


def test_heartbeat_only_after_log_every_s_without_a_finished_iteration(monkeypatch):
  """Fast iterations, then one of 35 s: its heartbeats come 10 s after the last line or the
  last finished iteration (whichever is later), then every 10 s."""
  lines = _timeline(monkeypatch, 5, 10.0, [1.0, 1.0, 1.0, 35.0, 1.0])
  beats = [(t, ln.split(":")[0]) for t, ln in lines if "still running" in ln]
  assert beats == [(13.0, "iteration 4/5 still running"), (23.0, "iteration 4/5 still running"),
                   (33.0, "iteration 4/5 still running")], lines


def test_heartbeat_follows_the_slowest_lane(monkeypatch):
  """The runs axis: `done` (the slowest lane) moving on counts as a finished iteration."""
  now = [0.0]
  monkeypatch.setattr(metrics_lib, "time", types.SimpleNamespace(time=lambda: now[0]))
  monkeypatch.setattr(metrics_lib.logging, "info", lambda fmt, *a: None)
  progress = metrics_lib.Progress(total=20, every_s=10.0)
  for t in range(1, 40):       # the slowest lane finishes an iteration every 4 s
    now[0] = float(t)
    if t % 4 == 0:
      progress.done += 1       # what ShowProgress.on_advance does
    assert not progress.beat(), t
  now[0] = 53.0                # then 14 s without one
  assert progress.beat()
