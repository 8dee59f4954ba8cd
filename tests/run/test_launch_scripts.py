"""launch/*.sh: every paper script runs the comparison launcher on configs that load.

Each script runs with a stand-in `python` on PATH that records its arguments; every recorded
call must be `launch/compare.py` with a loadable --config (file and argument), registered
methods, valid partitions and the data directory passed through, or, after them, the figure
command `launch/figures.py` on the comparison's folder (fig2.sh: Fig. 2(a), table2.sh: Fig. 4).
"""
import os
import pathlib
import shlex
import subprocess

import pytest
from ml_collections.config_flags import config_flags

from helpers.cli_runs import ROOT
from gas_jax import config as config_lib
from gas_jax.registry import ALGORITHMS

REPO = pathlib.Path(ROOT)
SCRIPTS = {"table1": 3, "fig2": 1, "fig3": 2, "table2": 4, "table3": 4, "table4": 8,
           "table5": 2}
FIGURES = {"fig2": "fig2", "table2": "fig4"}   # script -> its `launch/figures.py` figure
PAPER_SEEDS = ("fig2", "table2")               # scripts on the paper's seeds 2023,1998,1125


def _calls(tmp_path, script):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "calls.txt"
  shim = bin_dir / "python"
  shim.write_text(f'#!/usr/bin/env bash\nprintf "%q " "$@" >> {log}\necho >> {log}\n')
  shim.chmod(0o755)
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
  subprocess.run(["bash", f"launch/{script}.sh", "/data/dir", str(tmp_path / "out"), "--jobs=2"],
                 cwd=REPO, env=env, check=True, timeout=60)
  return [shlex.split(line) for line in log.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_paper_script_calls_compare_on_valid_configs(tmp_path, script):
  calls = _calls(tmp_path, script)
  if script in FIGURES:
    *calls, fig = calls
    assert fig[:2] == ["launch/figures.py", FIGURES[script]]
    assert f"--workdir={tmp_path / 'out'}" in fig
  assert len(calls) == SCRIPTS[script]
  workdirs = set()
  for argv in calls:
    assert argv[0] == "launch/compare.py"
    flags = dict(a[2:].split("=", 1) for a in argv[1:] if a.startswith("--") and "=" in a)
    assert flags["config.data.dir"] == "/data/dir" and flags["jobs"] == "2"
    config = config_flags.ConfigFileFlagParser(name="config").parse(str(REPO / flags["config"]))
    config_lib.validate(config)
    assert set(flags["methods"].split(",")) <= set(ALGORITHMS.names())
    for label in filter(None, flags.get("partitions", "").split(",")):
      cfg = config.copy_and_resolve_references()
      config_lib.apply_partition_arg(cfg, label)
    assert flags["seeds"] == "2023,1998,1125"   # the paper's seeds (Appendix E)
    workdirs.add(flags["workdir"])
  assert len(workdirs) == len(calls)       # no two comparisons share a directory
