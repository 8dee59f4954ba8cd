"""The model-inversion attack (gas_jax/privacy/attack.py, `python -m gas_jax.attack`).

Default suite: the whole attack on a stand-in victim whose "client model" is an invertible map
of the digits (8x8x1 -> 4x4x4, space to depth), so the decoder must beat the mean-image guess,
and the refusals. Slow: a real GAS digits run, trained and then attacked from the command line."""
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import types

import numpy as np
import pytest

from configs import digits
from helpers.cli_runs import ROOT, run_main
from gas_jax.data import sources
from gas_jax import workdir as workdir_lib
from gas_jax.errors import ConfigError, RunError
from gas_jax.privacy import attack

SMALL = attack.AttackSettings(aux=0, targets=100, epochs=8, batch_size=32, blocks=0,
                              channels=16)    # res_normN0C16: one of ResSFL's test attackers


def space_to_depth(params, x):   # noqa: ARG001  (the stand-in client model has no parameters)
  return x.reshape(-1, 4, 2, 4, 2, 1).transpose(0, 1, 3, 2, 4, 5).reshape(-1, 4, 4, 4)


@pytest.fixture(scope="module")
def victim():
  ds = sources.load_dataset("digits", None)
  return attack.Victim(config=digits.get_config(), ctx=types.SimpleNamespace(dataset=ds),
                       client_params=None, client_apply=space_to_depth, step=7)


@pytest.fixture(scope="module")
def attacked(victim, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("attacked"))
  return workdir, attack.run_attack(workdir, SMALL, victim=victim)


def check_outputs(workdir, result=None):
  with open(os.path.join(workdir, "attack.json")) as f:
    stored = json.load(f)
  if result is not None:
    assert stored == json.loads(json.dumps(result))
  for k in ("mse", "psnr", "ssim", "mse_std", "psnr_std", "ssim_std", "baseline", "settings",
            "decoder_train_mse", "global_iteration", "activation_shape", "image_range"):
    assert k in stored, k
  for r in (stored, stored["baseline"]):
    assert r["mse"] > 0 and np.isfinite(r["psnr"]) and 0.0 <= r["ssim"] <= 1.0
    assert r["mse_std"] >= 0 and r["psnr_std"] >= 0 and r["ssim_std"] >= 0
  assert abs(stored["psnr"] - 10 * np.log10(1 / stored["mse"])) < 3.0   # mean of per-image PSNRs
  with open(os.path.join(workdir, "reconstructions.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert not [n for n in os.listdir(workdir) if n.startswith(".tmp-")]
  return stored


def test_attack_writes_scores_settings_and_picture(attacked):
  workdir, result = attacked
  stored = check_outputs(workdir, result)
  assert stored["global_iteration"] == 7 and stored["activation_shape"] == [4, 4, 4]
  s = stored["settings"]
  assert (s["aux"], s["targets"], s["epochs"], s["batch_size"], s["decoder"]) == (
      360, 100, 8, 32, "res_normN0C16")     # aux=0: the whole test split of digits
  lo, hi = stored["image_range"]["lo"], stored["image_range"]["hi"]
  assert len(lo) == len(hi) == 1 and lo[0] < 0 < hi[0]     # normalised digits, one channel


def test_the_decoder_learns(attacked):
  """An invertible 'client model': after 8 epochs the reconstructions of the (unseen) training
  images beat the best constant guess, the auxiliary images' mean."""
  _, result = attacked
  assert result["mse"] < 0.6 * result["baseline"]["mse"], result
  assert result["ssim"] > result["baseline"]["ssim"] + 0.1, result
  assert result["psnr"] > result["baseline"]["psnr"] + 2.0, result


def _workdir_with(tmp_path, name, **fields):
  d = tmp_path / name
  d.mkdir()
  c = digits.get_config().to_dict()
  c.update(fields, execution_plan={"cohort_size": 0})
  (d / "config.json").write_text(json.dumps(c, default=list))
  return str(d)


def test_refusals_name_the_field(tmp_path, victim):
  with pytest.raises(RunError, match="config.algorithm=fedavg"):
    attack.run_attack(_workdir_with(tmp_path, "fl", algorithm="fedavg"), SMALL)
  with pytest.raises(RunError, match=r"config.seeds=\[0, 1\].*seed0"):
    attack.run_attack(_workdir_with(tmp_path, "multi", seeds=[0, 1]), SMALL)
  with pytest.raises(RunError, match="no checkpoint"):
    attack.run_attack(_workdir_with(tmp_path, "fresh"), SMALL)
  with pytest.raises(RunError, match="no config.json"):
    attack.run_attack(str(tmp_path), SMALL)
  with pytest.raises(RunError, match="--aux=5000: the test split has 360 images"):
    attack.run_attack(str(tmp_path), attack.AttackSettings(aux=5000), victim=victim)
  with pytest.raises(RunError, match="--targets=2000: the train split has 1437 images"):
    attack.run_attack(str(tmp_path), attack.AttackSettings(targets=2000), victim=victim)
  assert not os.path.exists(tmp_path / "fresh" / "checkpoints")
  assert not os.path.exists(tmp_path / "attack.json")


def test_command_line_error_is_one_line(tmp_path):
  workdir = _workdir_with(tmp_path, "ca2fl", algorithm="ca2fl")
  p = subprocess.run([sys.executable, "-m", "gas_jax.attack", f"--workdir={workdir}"], cwd=ROOT,
                     capture_output=True, text=True, timeout=120)
  assert p.returncode == 1
  assert p.stderr.strip().splitlines()[-1].startswith("error: config.algorithm=ca2fl")
  assert "Traceback" not in p.stderr
  assert not os.path.exists(os.path.join(workdir, "attack.json"))


@pytest.mark.slow
def test_attack_on_a_trained_gas_run_from_the_command_line(tmp_path):
  """A 1-iteration GAS digits run (E=1), then `python -m gas_jax.attack` with a small budget."""
  workdir = str(tmp_path / "gas")
  p = run_main(workdir, ["--config=configs/digits.py", "--config.num_global_iters=1",
                         "--config.clients.local_iters=1"])
  assert p.returncode == 0, p.stderr[-2000:]
  p = subprocess.run([sys.executable, "-m", "gas_jax.attack", f"--workdir={workdir}",
                      "--aux=64", "--targets=12", "--epochs=2", "--batch_size=16", "--blocks=1",
                      "--channels=8", "--seed=3"],
                     cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-2000:]
  assert "ssim" in p.stdout
  stored = check_outputs(workdir)
  assert stored["global_iteration"] == 1 and stored["algorithm"] == "gas"
  assert stored["activation_shape"] == [4, 4, 64] and stored["privacy_method"] == "none"
  s = stored["settings"]
  assert (s["aux"], s["targets"], s["epochs"], s["seed"], s["decoder"]) == (
      64, 12, 2, 3, "res_normN1C8")


@pytest.mark.parametrize("flag, value, allowed", [
    ("aux", -1, "n >= 0"), ("targets", 0, "n >= 1"), ("epochs", 0, "n >= 1"),
    ("batch_size", -3, "n >= 1"), ("blocks", -1, "n >= 0"), ("channels", 0, "n >= 1"),
    ("seed", -1, "0 <= n <= 2147483647"), ("seed", 2**31, "0 <= n <= 2147483647")])
def test_every_setting_out_of_range_is_one_line_naming_its_flag(tmp_path, victim, flag, value,
                                                                allowed):
  settings = dataclasses.replace(SMALL, **{flag: value})
  with pytest.raises(ConfigError) as e:
    attack.run_attack(str(tmp_path), settings, victim=victim)
  assert str(e.value).startswith(f"--{flag}={value}: must be an integer {allowed} (")
  assert "\n" not in str(e.value)
  assert not os.listdir(tmp_path)      # refused before anything, the lock included


def test_command_line_flags_out_of_range_or_unparsable_are_one_line(tmp_path):
  workdir = _workdir_with(tmp_path, "gas")
  for flag, start in (("--channels=0", "error: --channels=0: must be an integer n >= 1"),
                      ("--epochs=two", "error: flag --epochs=two: invalid literal for int()")):
    p = subprocess.run([sys.executable, "-m", "gas_jax.attack", f"--workdir={workdir}", flag],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr[-2000:]
    assert p.stderr.strip().splitlines() == [p.stderr.strip()], p.stderr[-2000:]
    assert p.stderr.startswith(start), p.stderr
  assert sorted(os.listdir(workdir)) == ["config.json"]


def test_a_run_still_training_is_not_attacked(tmp_path, victim):
  """Training holds the workdir lock: the attack refuses in one line and writes nothing."""
  workdir = _workdir_with(tmp_path, "live")
  with workdir_lib.WorkdirLock(workdir):     # what gas_jax.main holds while it trains
    with pytest.raises(RunError) as e:
      attack.run_attack(workdir, SMALL, victim=victim)
    assert re.fullmatch(
        rf"{re.escape(workdir)} is in use by process {os.getpid()} on "
        rf"{re.escape(socket.gethostname())} since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d: it is "
        r"still training or being attacked; attack it once that process has finished",
        str(e.value)), str(e.value)
    p = subprocess.run([sys.executable, "-m", "gas_jax.attack", f"--workdir={workdir}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {workdir} is in use by process {os.getpid()} on"), line
  assert sorted(os.listdir(workdir)) == [".lock", "config.json"]


def test_the_attack_holds_the_lock_while_it_runs(tmp_path, victim, monkeypatch):
  """A training started during the attack stops with one line naming the attack."""
  workdir = str(tmp_path / "run")
  seen = []
  real = attack._attack

  def during(*args):
    with pytest.raises(RunError, match=r"in use by process \d+ on .* \(gas_jax\.attack\) since"):
      workdir_lib.WorkdirLock(workdir).acquire()
    seen.append(True)
    return real(*args)

  monkeypatch.setattr(attack, "_attack", during)
  attack.run_attack(workdir, SMALL, victim=victim)
  assert seen == [True]
  check_outputs(workdir)
  workdir_lib.WorkdirLock(workdir).acquire().release()   # released at the end
