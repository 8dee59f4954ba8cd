"""summary.json's readings of the rows (`gas_jax.metrics`), against hand-computed cases: the
evaluation cadence (`eval_every`), final_accuracy over the last 5 evaluations, time_to_accuracy,
and mean_iter_wall_s without each process's first iteration (`callbacks.lane_walls`)."""
import json
import logging as py_logging

import pytest

from gas_jax import callbacks, metrics
from gas_jax.loop import Callback, Lane, run_loop


def _rows(accs, times=None):
  """Rows 1..T with these test accuracies (None: not evaluated), simulated time 10 s each."""
  return [dict(global_iteration=i, simulated_time_s=10.0 * i if times is None else times[i - 1],
               wall_time_s=float(i), test_accuracy=a, test_loss=None if a is None else 1 - a)
          for i, a in enumerate(accs, 1)]


def test_cadence_every_n_and_the_last():
  assert [i for i in range(1, 11) if metrics.is_evaluated(i, 3, 10)] == [3, 6, 9, 10]
  assert [i for i in range(1, 10) if metrics.is_evaluated(i, 3, 9)] == [3, 6, 9]
  assert [i for i in range(1, 5) if metrics.is_evaluated(i, 1, 4)] == [1, 2, 3, 4]
  assert [i for i in range(1, 3) if metrics.is_evaluated(i, 5, 2)] == [2]


def test_final_accuracy_is_the_mean_of_the_last_5_evaluations():
  # eval_every=2, T=13: evaluated 2, 4, ..., 12 and 13 -> the last 5: 6, 8, 10, 12, 13.
  accs = [None if i % 2 and i != 13 else i / 100 for i in range(1, 14)]
  s = metrics.summarize(_rows(accs), eval_every=2, targets=(0.05, 0.125, 0.5))
  assert s["final_accuracy"] == pytest.approx((0.06 + 0.08 + 0.10 + 0.12 + 0.13) / 5)
  assert s["final_accuracy_evals"] == 5 and s["eval_every"] == 2
  assert s["final_accuracy_window"] == ("mean of the last 5 evaluations (every 2 global "
                                        "iterations and the last)")
  assert s["best_accuracy"] == 0.13 and s["global_iterations"] == 13
  assert s["time_to_accuracy"] == {
      "0.05": dict(global_iteration=6, simulated_time_s=60.0),
      "0.125": dict(global_iteration=13, simulated_time_s=130.0),
      "0.5": None}
  json.dumps(s, allow_nan=False)      # strict JSON


def test_fewer_evaluations_than_the_window():
  s = metrics.summarize(_rows([0.2, 0.4, 0.9]))           # T=3 < 5, every iteration
  assert s["final_accuracy"] == pytest.approx(0.5) and s["final_accuracy_evals"] == 3
  s = metrics.summarize(_rows([None, None, 0.3, None, 0.7]), eval_every=3)   # 3 and 5
  assert s["final_accuracy"] == pytest.approx(0.5) and s["final_accuracy_evals"] == 2
  s = metrics.summarize(_rows([None, 0.25]), eval_every=4)                   # only the last
  assert s["final_accuracy"] == 0.25 and s["final_accuracy_evals"] == 1
  assert s["final_accuracy_window"].startswith("the last evaluation")


def test_an_earlier_last_iteration_off_the_cadence_is_left_out():
  """A T=3 run continued to T=6 with eval_every=2: row 3 was evaluated as the last of T=3; the
  summary is the one of an uninterrupted T=6 run (evaluations 2, 4, 6)."""
  extended = _rows([None, 0.2, 0.9, 0.4, None, 0.6])
  plain = _rows([None, 0.2, None, 0.4, None, 0.6])
  assert metrics.summarize(extended, eval_every=2, targets=(0.5,)) == metrics.summarize(
      plain, eval_every=2, targets=(0.5,))
  assert metrics.time_to_accuracy(extended, (0.5,), 2) == {
      "0.5": dict(global_iteration=6, simulated_time_s=60.0)}


def test_time_to_accuracy_first_evaluation_at_or_above():
  rows = _rows([0.1, 0.5, 0.4, 0.7, 0.65], times=[1.5, 2.5, 4.0, 8.0, 9.0])
  assert metrics.time_to_accuracy(rows, (0.5, 0.6, 0.7, 0.71)) == {
      "0.5": dict(global_iteration=2, simulated_time_s=2.5),        # at, not only above
      "0.6": dict(global_iteration=4, simulated_time_s=8.0),
      "0.7": dict(global_iteration=4, simulated_time_s=8.0),
      "0.71": None}
  assert metrics.time_to_accuracy([], (0.5,)) == {"0.5": None}
  assert metrics.time_to_accuracy(rows, ()) == {}


def test_window_phrases_and_old_summaries():
  assert metrics.evals_phrase([5, 5]) == "mean of the last 5 evaluations"
  assert metrics.evals_phrase([3, 5]) == "mean of the last 3-5 evaluations"
  assert metrics.evals_phrase([1]) == "the last evaluation"
  assert metrics.final_evals(dict(final_accuracy_evals=2, global_iterations=9)) == 2
  assert metrics.final_evals(dict(global_iterations=3)) == 3     # before eval_every: min(5, T)
  assert metrics.final_evals(dict(global_iterations=60)) == 5


def test_mean_iter_wall_leaves_out_each_process_first_iteration():
  """Two processes: iterations 1-3 (compiling 9 s), then a resume timing 4-6 (restore and
  compilation 7 s): the mean is over 2, 3, 5, 6."""
  walls = [9.0, 1.0, 1.2, 7.0, 1.1, 0.9]
  assert metrics.steady_walls(walls, [0, 3]) == [1.0, 1.2, 1.1, 0.9]
  lane = Lane(0, 0, None, "w", rows=[{}] * 6, walls=walls, starts=[0, 3])
  assert callbacks.lane_walls(lane, []) == (walls, [0, 3])
  # Older checkpoints kept walls for the last iterations only: the others from the rows.
  rows = [dict(wall_time_s=t) for t in (9.0, 10.0, 11.2, 18.2)]
  lane = Lane(0, 0, None, "w", rows=rows, walls=[7.0], starts=[0])
  got, starts = callbacks.lane_walls(lane, rows)
  assert got == pytest.approx([9.0, 1.0, 1.2, 7.0]) and starts == [0, 3]
  assert metrics.steady_walls(got, starts) == pytest.approx([1.0, 1.2])


class _Runner:
  def __init__(self):
    self.t = 0

  def run_iteration(self):
    self.t += 1
    return dict(server_updates=self.t, client_steps=self.t, simulated_time_s=float(self.t))


def test_the_loop_marks_each_process_first_iteration():
  lane = Lane(0, 0, None, "w")
  run_loop(_Runner(), [lane], [Callback()], num_iters=2)
  assert lane.starts == [0] and len(lane.walls) == 2
  run_loop(_Runner(), [lane], [Callback()], num_iters=5)        # a second process continues
  assert lane.starts == [0, 2] and len(lane.walls) == 5


def test_progress_line_with_rows_not_evaluated(caplog):
  p = metrics.Progress(total=4, every_s=0.0)
  lines = []
  with caplog.at_level(py_logging.INFO):
    for row in _rows([None, 0.5, None, 0.75]):
      p.update(row, force=True)
      lines.append(caplog.records[-1].getMessage())
  assert "not evaluated yet" in lines[0]
  assert "test_accuracy 0.5000  test_loss 0.5000" in lines[1] and "evaluated at" not in lines[1]
  assert "test_accuracy 0.5000" in lines[2] and "(evaluated at iteration 2)" in lines[2]
  assert "test_accuracy 0.7500" in lines[3]
