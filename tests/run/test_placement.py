"""Where a workdir may be (gas_jax/placement.py, called by gas_jax.workdir before anything is
written): never inside another run (its checkpoints/ included), never around one, never a system
folder. The red team's case end to end: a run made inside a host's checkpoints/ is refused, and
a host holding such a run (made before this rule) refuses to resume, its files and the nested
run's byte-identical. The legitimate layouts still pass: multi-seed lanes, launcher roots."""
import json
import os
import shutil

import pytest

from gas_jax import config as config_lib
from gas_jax import placement
from gas_jax import workdir as workdir_lib
from gas_jax.errors import RunError
from helpers import cli_runs

ARGS = ["--config=configs/digits.py", "--config.clients.local_iters=1",
        "--config.checkpoints_to_keep=1", "--config.checkpoint_every=1"]


def _error_line(proc):
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert lines[-1].startswith("error: "), proc.stderr[-2000:]
  return lines[-1]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """A finished digits run, T=1, keeping one checkpoint (the red team's host)."""
  d = str(tmp_path_factory.mktemp("base") / "run")
  proc = cli_runs.run_main(d, ARGS, "--config.num_global_iters=1")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert os.listdir(os.path.join(d, "checkpoints")) == ["1"]
  return d


def test_a_run_inside_a_hosts_checkpoints_is_refused(base, tmp_path):
  host = str(tmp_path / "host")
  shutil.copytree(base, host)
  before = cli_runs.digest(host)
  nested = os.path.join(host, "checkpoints", "2")
  line = _error_line(cli_runs.run_main(nested, ARGS, "--config.num_global_iters=1"))
  assert line == (f"error: --workdir={nested} is inside the run in {host} (in its checkpoints/ "
                  "folder, whose rotation deletes old step folders); nothing was changed: give "
                  "a folder outside every run")
  assert not os.path.exists(nested)
  assert cli_runs.digest(host) == before


def test_a_host_holding_a_nested_run_refuses_to_resume(base, tmp_path):
  """The nested run made by the old code: resuming the host to T=3 would rotate it away."""
  host = str(tmp_path / "host")
  shutil.copytree(base, host)
  nested = os.path.join(host, "checkpoints", "2")
  shutil.copytree(base, nested)
  before, nested_before = cli_runs.digest(host), cli_runs.digest(nested)
  line = _error_line(cli_runs.run_main(host, ARGS, "--config.num_global_iters=3"))
  assert line == (f"error: --workdir={host} contains the run in {nested}: a run's workdir may "
                  "not hold another run (its checkpoint rotation, resume and --overwrite act on "
                  "the whole folder); nothing was changed: give a folder of its own")
  assert cli_runs.digest(host) == before
  assert cli_runs.digest(nested) == nested_before and len(nested_before) > 3


def _fake_run(folder, **fields):
  """A run's config.json (what `placement` reads) in `folder`."""
  os.makedirs(folder, exist_ok=True)
  d = dict(algorithm="gas", num_global_iters=2, seed=0, seeds=[])
  d.update(fields)
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(d, f)
  return folder


def _config(**fields):
  return cli_runs.short_digits_config(**fields)


def _refused(workdir, config=None, match=""):
  config = config or _config()
  before = cli_runs.digest(os.path.dirname(workdir)) if os.path.isdir(workdir) else None
  with pytest.raises(RunError, match=match) as e:
    workdir_lib.finished_or_check(config, workdir)
  assert "\n" not in str(e.value)
  if before is not None:
    assert cli_runs.digest(os.path.dirname(workdir)) == before
  assert not os.path.exists(os.path.join(workdir, ".lock"))
  return str(e.value)


def test_inside_a_run_folder_or_around_one_is_refused(tmp_path):
  host = _fake_run(str(tmp_path / "host"))
  msg = _refused(os.path.join(host, "sub", "deeper"), match="is inside the run in")
  assert msg.endswith(f"{host} (where its --overwrite would move this run aside with its own); "
                      "nothing was changed: give a folder outside every run")
  _refused(os.path.join(host, "checkpoints", "2"), match="in its checkpoints/ folder")
  # Around a run: the launcher root itself, and any folder above a run (5 levels down).
  root = str(tmp_path / "compare")
  _fake_run(os.path.join(root, "shard2", "gas", "seed0"))
  msg = _refused(root, match="contains the run in")
  assert f"{os.path.join(root, 'shard2', 'gas', 'seed0')}: a run's workdir" in msg
  _fake_run(str(tmp_path / "campaign" / "runs" / "digits" / "iid" / "gas" / "seed0"))
  _refused(str(tmp_path / "campaign"), match="contains the run in")
  # A lane of a multi-seed run is no lane of a single-seed one.
  single = _fake_run(str(tmp_path / "single"))
  _refused(os.path.join(single, "seed0"), match="is inside the run in")


@pytest.mark.parametrize("path", ["/", "/usr", "/etc", "/var", "/tmp", "/proc/1", "/usr/lib/x",
                                  "/lib64/x", "/sys/kernel/x", "/dev/x", "~"])
def test_system_folders_are_refused_before_anything(path):
  path = os.path.expanduser(path)
  with pytest.raises(RunError, match=r"^--workdir=\S+: \S+ is (a system folder|inside the system "
                     r"folder /\w+); .*give a folder of its own") as e:
    config_lib.validate(_config(), path)
  assert "\n" not in str(e.value)
  with pytest.raises(RunError, match="system folder"):
    workdir_lib.finished_or_check(_config(), path)


def test_legitimate_layouts_pass(tmp_path):
  """Regression guards: multi-seed lanes, launcher cells beside each other, system-like paths
  that are not system folders."""
  multi = _fake_run(str(tmp_path / "multi"), seeds=[0, 1])
  for s in (0, 1):
    _fake_run(os.path.join(multi, f"seed{s}"), seed=s)
  placement.check(multi, (0, 1))                      # the multi-seed run resumes
  placement.check(multi)                              # (its stored seeds suffice)
  placement.check(os.path.join(multi, "seed1"))       # a lane continues alone
  # a lane that is not the run's: refused
  _refused(os.path.join(multi, "seed2"), _config(seed=2), match="is inside the run in")
  root = str(tmp_path / "compare")
  for m in ("gas", "fedavg"):
    _fake_run(os.path.join(root, "shard2", m, "seed0"))
  assert workdir_lib.finished_or_check(_config(), os.path.join(root, "shard2", "gas", "seed1")) \
      is None
  assert workdir_lib.finished_or_check(_config(), os.path.join(root, "iid", "gas", "seed0")) \
      is None
  for path in ("/tmp/x", "/var/tmp/x", "/dev/shm/x"):
    placement.check_system(path)
  # A config.json of something else (no algorithm / num_global_iters) is no run.
  other = tmp_path / "project"
  other.mkdir()
  (other / "config.json").write_text('{"name": "not a run"}')
  placement.check(str(other / "runs" / "x"))


def test_a_nested_run_below_the_bounds_is_not_walked(tmp_path, monkeypatch):
  monkeypatch.setattr(placement, "MAX_DEPTH", 2)
  _fake_run(str(tmp_path / "a" / "b" / "c"))
  assert placement.run_below(str(tmp_path)) is None
  monkeypatch.setattr(placement, "MAX_DEPTH", 3)
  assert placement.run_below(str(tmp_path)) == str(tmp_path / "a" / "b" / "c")
