"""gas_jax.cells: the budget's estimate, the launchers' command-line split, refused cells."""
from configs import digits
from gas_jax import cell_results, cell_processes, cells


def _cell(kind, name="c", workdir="/nowhere"):
  return cells.Cell(name=name, workdir=workdir, config=digits.get_config(), argv=[], kind=kind)


def test_estimate_is_the_longest_of_the_kind_else_of_any_cell():
  times = [("fmnist/gas", 100.0), ("fmnist/gas", 140.0), ("fmnist/fedavg", 300.0)]
  assert cell_processes.estimate_s(_cell("fmnist/gas"), times) == 140.0
  assert cell_processes.estimate_s(_cell("fmnist/ca2fl"), times) == 300.0    # unmeasured kind: longest
  assert cell_processes.estimate_s(_cell("fmnist/gas"), []) is None


def test_user_args_keeps_overrides_and_drops_the_launchers_own():
  argv = ["--config", "configs/digits.py:iid", "--methods=gas", "--config.optimizer.lr",
          "0.1", "--config.seed=3", "--config.data.dir=/d"]
  config_arg, overrides = cells.user_args(argv, ("--config.seed",), "x.py")
  assert config_arg == "--config=configs/digits.py:iid"
  assert overrides == ["--config.optimizer.lr=0.1", "--config.data.dir=/d"]


def test_cache_args_unless_given(tmp_path):
  assert cells.cache_args(str(tmp_path), []) == [
      f"--config.execution.compilation_cache_dir={tmp_path / 'xla_cache'}"]
  assert cells.cache_args(str(tmp_path), ["--config.execution.compilation_cache_dir=/c"]) == []


def test_refused_names_cells_holding_another_run():
  grid = {1: _cell("k", "a", "/w/a"), 2: _cell("k", "b", "/w/b"), 3: _cell("k", "c", "/w/c")}
  resolved = {1: cell_results.Resolved("todo"), 3: cell_results.Resolved("done"),
              2: cell_results.Resolved("refused", why="holds a run with another config")}
  assert cells.refused(resolved, grid) == ["b"]


def test_a_fresh_cell_is_todo(tmp_path):
  c = _cell("k", workdir=str(tmp_path / "cell"))
  assert cells.state(c) == "todo"
  assert cells.resolve(c, str(tmp_path / "cell.json")).state == "todo"
