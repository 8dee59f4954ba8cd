"""launch/privacy.py and its report (`gas_jax.privacy.report`): one command for the
privacy/accuracy trade-off, finished cells skipped, the table's numbers from the cells' files."""
import json
import os
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from helpers.cli_runs import ROOT
from gas_jax.privacy import report


def _fake_cell(root, split, defence, seed, acc, ssim, mse):
  wd = report.cell_dir(str(root), split, defence, seed)
  os.makedirs(wd)
  with open(os.path.join(wd, "summary.json"), "w") as f:
    json.dump(dict(final_accuracy=acc, global_iterations=4), f)
  with open(os.path.join(wd, "attack.json"), "w") as f:
    json.dump(dict(mse=mse, psnr=10 * np.log10(1 / mse), ssim=ssim,
                   baseline=dict(mse=0.08, psnr=10.97, ssim=0.12)), f)


def test_table_and_plot_from_the_cells(tmp_path):
  _fake_cell(tmp_path, "L1", "none", 0, 0.50, 0.90, 0.004)
  _fake_cell(tmp_path, "L1", "none", 1, 0.60, 0.80, 0.006)
  _fake_cell(tmp_path, "L1", "nopeek_g3", 0, 0.40, 0.50, 0.02)
  os.makedirs(report.cell_dir(str(tmp_path), "L2", "none", 0))     # a run without its attack
  with open(os.path.join(report.cell_dir(str(tmp_path), "L2", "none", 0), "summary.json"),
            "w") as f:
    json.dump(dict(final_accuracy=0.7, global_iterations=4), f)
  paths = report.write_report(str(tmp_path), ["L1", "L2"], ["none", "nopeek_g3"], [0, 1],
                              ["header line"])
  md = open(paths["table"]).read()
  psnr = [10 * np.log10(1 / 0.004), 10 * np.log10(1 / 0.006)]
  assert (f"| L1 | none | 2/2 | 55.00 ± 5.00 | 0.0050 ± 0.0010 | {np.mean(psnr):.2f} ± "
          f"{np.std(psnr):.2f} | 0.850 ± 0.050 |") in md
  assert "| L1 | nopeek_g3 | 1/2 | 40.00 ± 0.00 | 0.0200 ± 0.0000 |" in md
  assert "| L2 | none | 0/2 | - | - | - | - |" in md           # no attack: not counted
  assert "header line" in md and "SSIM 0.120" in md
  # the true window: these summaries (T=4, before final_accuracy_evals) averaged 4 evaluations
  assert "`final_accuracy` (mean of the last 4 evaluations)" in md and "last 5" not in md
  img = matplotlib.image.imread(paths["plot"])
  assert img.shape[0] > 100 and img.shape[1] > 100


def test_defence_labels():
  assert report.defence_label("none", None) == "none"
  assert report.defence_label("inversion", 0.3) == "inversion_g0.3"
  assert report.defence_label("nopeek", 3.0) == "nopeek_g3"
  assert report.defence_label("inversion", 3.0, 0.0) == "inversion_g3_t0"


def _privacy(workdir, *args):
  return subprocess.run(
      [sys.executable, "launch/privacy.py", "--config=configs/digits.py", f"--workdir={workdir}",
       "--splits=default", "--seeds=0", "--aux=64", "--targets=8", "--epochs=1",
       "--config.num_global_iters=1", "--config.clients.num=5",
       "--config.clients.participating=2", "--config.clients.local_iters=2", *args],
      cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.slow   # ~2 min on 2 CPU cores: 2 cells trained and attacked, then 1 attack again
def test_one_command_runs_attacks_reports_and_skips_finished_cells(tmp_path):
  proc = _privacy(tmp_path, "--defences=none,nopeek:1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  for d in ("none", "nopeek_g1"):
    wd = report.cell_dir(str(tmp_path), "default", d, 0)
    with open(os.path.join(wd, "config.json")) as f:
      cfg = json.load(f)
    assert cfg["privacy"]["method"] == d.split("_")[0]
    with open(os.path.join(wd, "attack.json")) as f:
      assert json.load(f)["settings"]["aux"] == 64
  assert cfg["privacy"]["gamma"] == 1.0
  assert "| default | nopeek_g1 | 1/1 |" in proc.stdout
  assert os.path.exists(tmp_path / "accuracy_vs_ssim.png")
  # Again: nothing runs. With other attack settings: only the attacks run again.
  wd = report.cell_dir(str(tmp_path), "default", "none", 0)
  log = os.path.join(wd, "log.txt")
  size = os.path.getsize(log)
  proc = _privacy(tmp_path, "--defences=none,nopeek:1")
  assert proc.returncode == 0 and "0 cell(s) to run" in proc.stderr, proc.stderr[-3000:]
  assert os.path.getsize(log) == size
  proc = _privacy(tmp_path, "--defences=none", "--targets=4")
  assert proc.returncode == 0, proc.stderr[-3000:]
  new = open(log).read()[size:]
  assert "attack on" in new and "iteration 1/1" not in new     # the run was not repeated
  with open(os.path.join(wd, "attack.json")) as f:
    assert json.load(f)["settings"]["targets"] == 4


# Each case is a process (~9 s on 2 shared cores): the default suite keeps a malformed
# defence and a value out of range; the others are slow.
@pytest.mark.parametrize("defence,message", [
    ("nopeek", "is not 'none', nopeek:GAMMA or inversion:GAMMA[:TAU]"),
    pytest.param("none:1", "is not 'none', nopeek:GAMMA", marks=pytest.mark.slow),
    pytest.param("blur:1", "is not 'none', nopeek:GAMMA", marks=pytest.mark.slow),
    pytest.param("nopeek:1:0", "is not 'none', nopeek:GAMMA", marks=pytest.mark.slow),
    pytest.param("inversion:1:0:2", "is not 'none', nopeek:GAMMA", marks=pytest.mark.slow),
    pytest.param("nopeek:x", "GAMMA and TAU must be numbers", marks=pytest.mark.slow),
    ("inversion:1:2", "privacy.tau=2.0"),
    pytest.param("nopeek:-1", "privacy.gamma=-1.0", marks=pytest.mark.slow),
])
def test_bad_defences_are_refused_before_anything_runs(tmp_path, defence, message):
  proc = _privacy(tmp_path, f"--defences={defence}")
  assert proc.returncode == 1 and message in proc.stderr, proc.stderr[-2000:]
  assert not os.path.exists(tmp_path / "default")
