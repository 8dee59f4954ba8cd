"""Config validation: every failure names the field, the value and what is allowed."""
import os

import pytest

from configs import cifar10, digits
from gas_jax import config as config_lib


def _set(c, field, value):
  node = c
  parts = field.split(".")
  for p in parts[:-1]:
    node = node[p]
  node[parts[-1]] = value


CASES = [
    ("clients.participating", 30, "must be <= clients.num"),
    ("clients.participating", 0, "must be an integer > 0"),
    ("clients.num", -1, "must be an integer > 0"),
    ("clients.local_iters", 0, "must be an integer > 0"),
    ("clients.batch_size", 0, "must be an integer > 0"),
    ("optimizer.lr", 0.0, "must be a finite number > 0"),
    ("optimizer.lr", -0.1, "must be a finite number > 0"),
    ("data.alpha", 0.0, "must be a finite number > 0"),
    ("data.alpha", -1.0, "must be a finite number > 0"),
    ("data.name", "nope", "allowed:"),
    ("data.partition", "nope", "allowed: iid, shard, dirichlet"),
    ("model.name", "nope", "allowed:"),
    ("model.split", "L9", "allowed: default"),
    ("algorithm", "nope", "allowed:"),
    ("num_global_iters", 0, "must be an integer > 0"),
    ("seed", -1, "must be an integer >= 0"),
    ("optimizer.name", "rmsprop", "allowed: sgd, adam"),
    ("optimizer.decay", "cosine", "allowed: none, sqrt"),
    ("weighting.fn", "cubic", "allowed: ref, linear, exp, poly"),
    ("stats.method", "eig", "allowed: sqrt, cholesky"),
    ("stats.jitter", -1e-5, "must be a finite number >= 0"),
    ("clients.momentum", "none", "allowed: shared, per_client"),
    ("clients.aggregation", "median", "allowed: uniform, data_size"),
    ("execution.cohort_size", -2, "-1 (auto)"),
    ("execution.server_chunk", -3, "rows per chunk"),
    ("checkpoint_every", 0, "must be an integer > 0"),
    ("time.compute_max", 1e8, "must be >= time.compute_min"),
    ("stats.covariance", "sparse", "allowed: full, diag, lowrank"),
    ("stats.rank", 0, "must be an integer > 0"),
    ("stats.refresh_every", 0, "must be an integer > 0"),
    ("stats.refresh_every", 5, "only applies to stats.method='cholesky'"),
    ("execution.vmap_seeds", 2, "allowed: -1, 0, 1"),
    ("execution.compilation_cache_dir", None, "a directory path"),
    ("seeds", (1, 1), "must be distinct"),
    ("eval_examples", -1, "must be an integer >= 0"),
    ("execution.precision", "fp16", "one of ['float32', 'tf32', 'bf16']"),
    ("eval_examples", True, "must be an integer >= 0"),
    ("eval_every", 0, "must be an integer > 0"),
    ("eval_every", -2, "must be an integer > 0"),
    ("eval_every", True, "must be an integer > 0"),
    ("report.targets", (0.5, 0.0), "must be distinct accuracies in (0, 1]"),
    ("report.targets", (1.5,), "must be distinct accuracies in (0, 1]"),
    ("report.targets", (0.6, 0.6), "must be distinct accuracies in (0, 1]"),
    ("report.targets", (float("nan"),), "must be distinct accuracies in (0, 1]"),
    ("report.targets", ("high",), "must be distinct accuracies in (0, 1]"),
]


def test_lowrank_needs_the_square_root_factor():
  c = digits.get_config()
  c.stats.covariance, c.stats.method = "lowrank", "cholesky"
  with pytest.raises(config_lib.ConfigError, match=r"stats.covariance='lowrank' is invalid: "
                     r"needs stats.method='sqrt'"):
    config_lib.validate(c)


@pytest.mark.parametrize("field,value,allowed", CASES)
def test_each_bad_value_is_named(field, value, allowed):
  c = digits.get_config()
  _set(c, field, value)
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c)
  msg = str(e.value)
  assert msg.startswith(f"{field}=") and repr(value) in msg and allowed in msg, msg
  assert "\n" not in msg


def test_shards_not_divisible_by_classes():
  c = digits.get_config()
  c.clients.num = 15
  c.data.shards = 3          # 45 shards for 10 classes
  config_lib.validate(c)     # fine without the data...
  with pytest.raises(config_lib.ConfigError, match=r"^data\.shards=3 .*divisible by the number "
                     r"of classes \(10\)"):
    config_lib.validate_with_data(c, num_classes=10, num_train=1437, num_test=360)


def test_eval_examples_beyond_the_test_split():
  c = digits.get_config()
  c.eval_examples = 361
  config_lib.validate(c)
  with pytest.raises(config_lib.ConfigError, match=r"^eval_examples=361 .*<= the 360 test"):
    config_lib.validate_with_data(c, num_classes=10, num_train=1437, num_test=360)
  c.eval_examples = 360
  config_lib.validate_with_data(c, num_classes=10, num_train=1437, num_test=360)


def test_unwritable_workdir(tmp_path):
  ro = tmp_path / "ro"
  ro.mkdir()
  os.chmod(ro, 0o500)
  if os.access(ro, os.W_OK):   # running as root: permissions are not enforced
    pytest.skip("permissions are not enforced for this user")
  with pytest.raises(config_lib.ConfigError, match="^workdir="):
    config_lib.validate(digits.get_config(), str(ro / "run"))


def test_workdir_under_a_file(tmp_path):
  f = tmp_path / "file"
  f.write_text("x")
  with pytest.raises(config_lib.ConfigError, match="^workdir=.*not a writable directory"):
    config_lib.validate(digits.get_config(), str(f / "run"))


def test_shipped_configs_are_valid():
  config_lib.validate(digits.get_config())
  for arg in ("", "shard2", "dir0.1", "iid"):
    config_lib.validate(cifar10.get_config(arg))
  with pytest.raises(config_lib.ConfigError, match="config argument"):
    cifar10.get_config("bogus")


def test_report_targets_on_the_command_line(tmp_path):
  """--config.report.targets=A,B and a single target parse; a bad one is one error line."""
  import subprocess, sys  # noqa: E401,PLC0415
  from helpers.cli_runs import main_cmd, ROOT  # noqa: PLC0415
  for value, ok in (("0.5,0.9", True), ("0.8", True), ("0.5,2", False)):
    out = subprocess.run(main_cmd(str(tmp_path / "never"), [
        "--config=configs/digits.py", f"--config.report.targets={value}",
        "--config.checkpoint_every=0"]), cwd=ROOT, capture_output=True, text=True, timeout=300)
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    # checkpoint_every is checked after report.targets: valid targets reach that line
    assert last.startswith("error: checkpoint_every=0 is invalid" if ok else
                           "error: report.targets="), last
