"""Test accuracy is measured by one shared evaluator, on the same test images for every method.

`eval_examples` (N test images, one fixed draw; 0 = all of them) changes what every method is
scored on through `evaluation.test_images`, which train_and_evaluate calls for every method.
"""
import hashlib
import json
import os

import numpy as np
import pytest

from configs import digits
from gas_jax import evaluation, train
from gas_jax.data import sources
from gas_jax.registry import ALGORITHMS

N = 60


def _digest(a) -> str:
  return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_test_images_is_one_fixed_draw():
  ds = sources.load_dataset("digits", None)
  x, y = evaluation.test_images(ds, N)
  assert x.shape == (N,) + ds.x_test.shape[1:] and y.shape == (N,)
  # N distinct test images, in file order, the same on every call.
  idx = [int(np.flatnonzero((ds.x_test == xi).all(axis=(1, 2, 3)))[0]) for xi in x]
  assert idx == sorted(set(idx)) and len(idx) == N
  np.testing.assert_array_equal(y, ds.y_test[idx])
  x2, _ = evaluation.test_images(ds, N)
  np.testing.assert_array_equal(x, x2)
  # A draw, not the first N images; 0 (or every image) means the whole split.
  assert idx != list(range(N))
  for n in (0, len(ds.y_test)):
    xa, ya = evaluation.test_images(ds, n)
    assert xa is ds.x_test and ya is ds.y_test


# One method per runner in the default suite, the others in the slow set.
METHODS = [m if m in ("gas", "fedbuff", "minibatch_sfl")
           else pytest.param(m, marks=pytest.mark.slow) for m in ALGORITHMS.names()]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_is_scored_on_the_same_images(method, tmp_path, monkeypatch):
  seen = []
  orig = evaluation.Evaluator.__init__

  def recording(self, model, x_test, y_test, batch_size):
    seen.append((_digest(x_test), _digest(y_test), len(y_test)))
    orig(self, model, x_test, y_test, batch_size)

  monkeypatch.setattr(evaluation.Evaluator, "__init__", recording)
  c = digits.get_config()
  c.algorithm, c.eval_examples, c.num_global_iters = method, N, 1
  c.clients.num, c.clients.participating, c.clients.local_iters = 5, 2, 2
  summary = train.train_and_evaluate(c, str(tmp_path))
  x, y = evaluation.test_images(sources.load_dataset("digits", None), N)
  assert seen == [(_digest(x), _digest(y), N)]
  acc = summary["final_accuracy"] * N
  assert abs(acc - round(acc)) < 1e-6      # a count out of N, not out of the 360 test images


def _tiny(method, T, eval_every, **kw):
  c = digits.get_config()
  c.algorithm, c.num_global_iters, c.eval_every, c.eval_examples = method, T, eval_every, N
  c.clients.num, c.clients.participating, c.clients.local_iters = 5, 2, 2
  c.report.targets = (0.01, 0.99)
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def _read(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  with open(os.path.join(workdir, "summary.json")) as f:
    return rows, json.load(f)


@pytest.mark.parametrize("method", METHODS)
def test_eval_every_same_rows_for_every_method(method, tmp_path):
  """eval_every=2, T=3: rows 2 and 3 (the last) evaluated, row 1 null, for every method; the
  training columns and the evaluated rows equal those of eval_every=1; the summary reads the
  two evaluations."""
  train.train_and_evaluate(_tiny(method, 3, 2), str(tmp_path / "e2"))
  train.train_and_evaluate(_tiny(method, 3, 1), str(tmp_path / "e1"))
  rows, summary = _read(str(tmp_path / "e2"))
  full, _ = _read(str(tmp_path / "e1"))
  assert [r["global_iteration"] for r in rows if r["test_accuracy"] is not None] == [2, 3]
  assert rows[0]["test_accuracy"] is None and rows[0]["test_loss"] is None
  for a, b in zip(rows, full):
    assert a.keys() == b.keys()
    for k in a:
      if k != "wall_time_s" and (a["test_accuracy"] is not None or not k.startswith("test_")):
        assert a[k] == b[k], (a["global_iteration"], k)
  accs = [rows[1]["test_accuracy"], rows[2]["test_accuracy"]]
  assert summary["final_accuracy"] == pytest.approx(np.mean(accs), rel=1e-12)
  assert summary["final_accuracy_evals"] == 2 and summary["eval_every"] == 2
  want = {}
  for t in (0.01, 0.99):
    hit = next((r for r in rows[1:] if r["test_accuracy"] >= t), None)
    want[str(t)] = None if hit is None else dict(global_iteration=hit["global_iteration"],
                                                 simulated_time_s=hit["simulated_time_s"])
  assert summary["time_to_accuracy"] == want and want["0.01"] is not None


class _FakeEvaluator:
  def __call__(self, params):
    return dict(test_accuracy=0.5, test_loss=float(params))


class _FakeRunner:
  def __init__(self, boundary):
    self.boundary = boundary

  def eval_params(self, *lane):
    return 1.25

  def at_row_boundary(self, i):
    return self.boundary


@pytest.mark.parametrize("multi", [False, True])
def test_a_lowered_T_evaluates_the_new_last_row_at_start(multi):
  """A run resumed with num_global_iters lowered to the 3 iterations it did (eval_every=2):
  row 3 was not evaluated; it is now, from the restored models. For a seed of the runs axis
  whose models moved on past its row, that is refused in one line."""
  from gas_jax import callbacks, config as config_lib   # noqa: PLC0415
  from gas_jax.loop import Lane, Loop   # noqa: PLC0415
  rows = [dict(global_iteration=i, test_accuracy=None if i % 2 else 0.25, test_loss=None)
          for i in (1, 2, 3)]
  cb = callbacks.Evaluate(_FakeEvaluator(), eval_every=2)
  loop = Loop(_FakeRunner(boundary=True), [Lane(0, 7, None, "w", rows=rows)], 3, multi)
  cb.on_start(loop)
  assert rows[2]["test_accuracy"] == 0.5 and rows[2]["test_loss"] == 1.25
  assert rows[0]["test_accuracy"] is None
  rows[2].update(test_accuracy=None)
  loop = Loop(_FakeRunner(boundary=False), [Lane(0, 7, None, "w", rows=rows)], 3, multi)
  if not multi:
    cb.on_start(loop)     # a single run's checkpoint is always at its last row
    assert rows[2]["test_accuracy"] == 0.5
    return
  with pytest.raises(config_lib.RunError, match=r"^seed 7: global iteration 3, now the last, "
                     r"was not evaluated \(eval_every=2\)"):
    cb.on_start(loop)
  loop = Loop(_FakeRunner(boundary=False), [Lane(0, 7, None, "w", rows=rows)], 5, multi)
  cb.on_start(loop)       # not the last: nothing to do
  assert rows[2]["test_accuracy"] is None


_WALL_KEYS = ("wall_time_s", "mean_iter_wall_s", "mean_iter_wall_iters", "first_iter_wall_s")


def _numbers(workdir):
  """(rows, summary) without the wall-clock fields."""
  rows, summary = _read(workdir)
  for r in rows:
    r.pop("wall_time_s")
  return rows, {k: v for k, v in summary.items() if k not in _WALL_KEYS}


def _host(workdir, step):
  with open(os.path.join(workdir, "checkpoints", str(step), "host", "metadata")) as f:
    return json.load(f)


@pytest.mark.slow
def test_resumes_with_eval_every(tmp_path, monkeypatch):
  """eval_every=2. A run stopped after iteration 3 of 5 and resumed equals the uninterrupted
  one, and its mean_iter_wall_s leaves out the first iteration of each process. Resumed with T
  lowered to 3, it evaluates row 3 and equals an uninterrupted T=3 run. A finished T=3 run
  continued to T=5 keeps row 3's evaluation in metrics.jsonl, and its summary is the T=5 run's."""
  import shutil   # noqa: PLC0415
  from gas_jax import callbacks   # noqa: PLC0415
  wd = {k: str(tmp_path / k) for k in ("ref5", "ref3", "stopped")}
  cfg = lambda T: _tiny("gas", T, 2, checkpoint_every=1)   # noqa: E731
  train.train_and_evaluate(cfg(5), wd["ref5"])
  train.train_and_evaluate(cfg(3), wd["ref3"])
  orig = callbacks.Checkpoints.on_advance

  def stop_at_3(self, loop, finished):
    orig(self, loop, finished)
    if loop.lanes[0].done == 3:
      raise SystemExit(143)

  monkeypatch.setattr(callbacks.Checkpoints, "on_advance", stop_at_3)
  with pytest.raises(SystemExit):
    train.train_and_evaluate(cfg(5), wd["stopped"])
  monkeypatch.undo()
  for name, src, T in (("continued", "stopped", 5), ("lowered", "stopped", 3),
                       ("extended", "ref3", 5)):
    wd[name] = str(tmp_path / name)
    shutil.copytree(wd[src], wd[name])
    train.train_and_evaluate(cfg(T), wd[name])
  assert _numbers(wd["continued"]) == _numbers(wd["ref5"])
  assert _numbers(wd["lowered"]) == _numbers(wd["ref3"])
  rows, summary = _numbers(wd["extended"])
  ref_rows, ref_summary = _numbers(wd["ref5"])
  assert summary == ref_summary
  assert rows[2]["test_accuracy"] == _numbers(wd["ref3"])[0][2]["test_accuracy"] is not None
  assert ref_rows[2]["test_accuracy"] is None
  rows[2].update(test_accuracy=None, test_loss=None)
  assert rows == ref_rows
  # Wall times: two processes timed 3 + 2 iterations; the first of each is left out.
  host = _host(wd["continued"], 5)
  assert host["starts"] == [[0, 3]] and len(host["walls"][0]) == 5
  _, full = _read(wd["continued"])
  steady = [w for i, w in enumerate(host["walls"][0]) if i not in (0, 3)]
  assert full["mean_iter_wall_iters"] == 3
  assert full["mean_iter_wall_s"] == pytest.approx(np.mean(steady), rel=1e-12)
  assert full["first_iter_wall_s"] == host["walls"][0][0]
  assert _read(wd["ref5"])[1]["mean_iter_wall_iters"] == 4
  assert _read(wd["lowered"])[1]["mean_iter_wall_iters"] == 2    # no iteration in the 2nd
