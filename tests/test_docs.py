"""Every fenced command of README.md and docs/*.md still works (issue 28, item 9).

Each ```bash command is either in RUN (the slow test runs it, shortened: one global iteration
of one local step, its folders in a temporary directory, dataset folders replaced by tiny files
in the real format) or in SKIP with the reason it is not run. The default suite checks that
every documented command is listed (a new one cannot slip in unlisted), that no entry is stale,
and that the config of every command that names one loads and validates with its overrides.
A new command in the docs: add it to RUN or SKIP here.
"""
import json
import os
import subprocess

import pytest

from gas_jax import config as config_lib
from helpers import doc_commands as dc
from helpers.cli_runs import ROOT

_BENCH = "a speed benchmark (minutes on a CPU, its figures in docs/benchmarks.md); " \
         "tests/benchmarks/test_benchmarks.py runs "
_DIGITS = "python -m gas_jax.main --config=configs/digits.py --workdir=/tmp/gas_digits"

RUN = {
    "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt && "
    "pip install -e . && python -m gas_jax.main --config=configs/digits.py "
    "--workdir=runs/digits": dc.Run(expect=("runs/digits/summary.json",)),
    "python -m gas_jax.main --config=configs/digits.py --workdir=runs/nogen "
    "--config.generate=False": dc.Run(expect=("runs/nogen/summary.json",)),
    "python -m gas_jax.main --config=configs/digits.py --workdir=runs/dir "
    "--config.data.partition=dirichlet --config.data.alpha=0.1":
        dc.Run(expect=("runs/dir/summary.json",)),
    "python -m gas_jax.main --config=configs/cifar10.py:dir0.1 --config.data.dir=/data "
    "--workdir=runs/c10": dc.Run(extra=dc.TINY, data="cifar10", expect=("runs/c10/summary.json",)),
    "python -m gas_jax.main --config=configs/fmnist.py:shard2 "
    "--config.data.dir=/usr/share/datasets/fashion-mnist --workdir=runs/fmnist":
        dc.Run(extra=dc.TINY, data="fmnist", expect=("runs/fmnist/summary.json",)),
    "python launch/compare.py --config=configs/digits.py "
    "--methods=gas,gas_nogen,fedavg,fedbuff,ca2fl,minibatch_sfl,s2fl --seeds=0,1,2 "
    "--partitions=shard2,dir0.1 --workdir=runs/compare --jobs=2":
        dc.Run(extra=("--seeds=0", "--partitions=shard2", *dc.SHORT),
               expect=("runs/compare/results.md", "runs/compare/accuracy_vs_time.png",
                       "runs/compare/shard2/s2fl/seed0/summary.json")),
    "python launch/campaign.py --plan=launch/plans/fmnist_table1.txt --budget_s=600 --out=. "
    "--config.data.dir=data/fashion-mnist":
        # --budget_s=1: the first cell runs alone (to be measured), then nothing else fits.
        dc.Run(extra=("--budget_s=1", *dc.TINY), data="fmnist",
               expect=("results/fmnist/shard2/gas/seed0.json",)),
    "python launch/privacy.py --config=configs/privacy_fmnist.py --workdir=runs/privacy "
    "--config.data.dir=/usr/share/datasets/fashion-mnist":
        dc.Run(extra=("--splits=L1", "--seeds=0", "--defences=none", "--aux=10", "--targets=4",
                      "--epochs=1", *dc.TINY), data="fmnist",
               expect=("runs/privacy/results.md", "runs/privacy/accuracy_vs_ssim.png")),
    _DIGITS: dc.Run(expect=("tmp/gas_digits/summary.json",)),
    "python -m gas_jax.attack --workdir=/tmp/gas_digits":
        dc.Run(extra=("--aux=20", "--targets=4", "--epochs=1", "--blocks=1", "--channels=8"),
               after=_DIGITS, expect=("tmp/gas_digits/attack.json",)),
    "python -m gas_jax.main --config=configs/digits.py --workdir=/tmp/gas_inv "
    "--config.privacy.method=inversion": dc.Run(expect=("tmp/gas_inv/summary.json",)),
    "python -m gas_jax.main --config=configs/digits.py --config.num_global_iters=20 --workdir=RUN "
    "--config.privacy.method=METHOD --config.privacy.gamma=GAMMA":
        dc.Run(subs=(("METHOD", "nopeek"), ("GAMMA", "0.3")), expect=("RUN/summary.json",)),
}

SKIP = {
    ". .venv/bin/activate && python -m pytest": "the test suite itself (.ci/run runs it)",
    "launch/scenarios.sh runs/scenarios --jobs=2 --config.num_global_iters=12":
        "84 runs (26 minutes on 2 cores): four launch/compare.py comparisons (compare.py is run "
        "above) with system.* overrides, each scenario tested in tests/runners/test_scenarios.py; "
        "its report in tests/run/test_scenario_report.py",
    "sudo apt-get install dataset-fashion-mnist":
        "installs a system package as root from the network (.ci/run installs it)",
    "pip install tensorflow tensorflow-datasets && tfds build cifar10 "
    "--file_format=array_record --data_dir=/data":
        "downloads TensorFlow and CIFAR-10 (no network here); the TFDS ArrayRecord reader: "
        "tests/data/",
    "benchmarks/gpu_bench.sh OUTDIR [CONFIG] [SECONDS]":
        "a bounded benchmark session for a GPU lease; tests/benchmarks/test_benchmarks.py checks "
        "its calls with a stand-in python",
    "python -m benchmarks.run iteration --config=configs/digits.py --out=digits.json --iters=20":
        _BENCH + "`iteration` on a tiny digits config",
    "python -m benchmarks.run iteration --config=configs/cifar10.py --out=cifar10.json --iters=2":
        _BENCH + "`iteration` on a tiny digits config",
    "python -m benchmarks.run iteration --config=configs/cifar10.py --out=cifar10.json --iters=3":
        _BENCH + "`iteration` on a tiny digits config",
    "python -m benchmarks.run iteration --config=configs/cifar10.py "
    "--config.execution.cohort_size=1 --out=c.json": _BENCH + "`iteration` on a tiny digits config",
    "python -m benchmarks.run conv --out=conv.json": _BENCH + "`conv --small`",
    "python -m benchmarks.run qr --config=configs/cifar10.py --out=qr.json":
        _BENCH + "`qr --small` on digits",
    "python -m benchmarks.run seeds --config=configs/cifar10.py --seeds=0,1,2 --iters=10 "
    "--out=seeds.json": _BENCH + "`seeds --parts` on a tiny digits config (slow set)",
    "python -m benchmarks.run seeds --config=configs/cifar10.py --seeds=0,1,2 --iters=6 --parts "
    "--out=p.json": _BENCH + "`seeds --parts` on a tiny digits config (slow set)",
    "python -m benchmarks.run parts --config=configs/cifar10.py --out=parts.json "
    "--trace=/tmp/trace": _BENCH + "`parts` on a tiny digits config",
    "python -m benchmarks.run matmul_peak --out=peak.json": _BENCH + "`matmul_peak` at size 64",
}


def test_extraction_joins_continuations_and_drops_comments_and_other_fences():
  text = ("text\n```bash\npython a.py --x=1 \\\n    --y=2   # a comment\n# only a comment\n\n"
          "launch/b.sh  DATA OUT\n```\n```\nnot a command\n```\n```python\nprint(1)\n```\n")
  assert dc.commands_in(text) == ["python a.py --x=1 --y=2", "launch/b.sh DATA OUT"]


def test_argv_moves_paths_fills_placeholders_and_appends_the_short_run(tmp_path):
  run = dc.Run(subs=(("METHOD", "nopeek"),), extra=("--k=1",))
  got = dc.argv("python -m m --workdir=/tmp/w --out=. --config.p=METHOD --config.data.dir=/d",
                run, str(tmp_path), data_dir="/tiny")
  assert got[1:] == ["-m", "m", f"--workdir={tmp_path}/tmp/w", f"--out={tmp_path}",
                     "--config.p=nopeek", "--config.data.dir=/tiny", "--k=1"]
  assert dc.parts("python3 -m venv .venv && . .venv/bin/activate && python -m x") == ["python -m x"]
  with pytest.raises(ValueError, match="rm -rf"):
    dc.parts("python -m x && rm -rf y")


def test_every_documented_command_is_run_or_skipped_with_a_reason():
  documented = dc.documented()
  unlisted = [f"{c!r} ({', '.join(f)})" for c, f in documented.items()
              if c not in RUN and c not in SKIP]
  assert not unlisted, "add these commands to RUN or SKIP in tests/test_docs.py:\n" + \
      "\n".join(unlisted)
  assert not set(RUN) & set(SKIP)
  stale = (set(RUN) | set(SKIP)) - set(documented)
  assert not stale, f"no longer in README.md or docs/*.md: {sorted(stale)}"
  assert all(len(reason) > 20 for reason in SKIP.values())
  for command, run in RUN.items():
    assert not run.after or run.after in RUN, command
    assert run.expect, command
    dc.parts(command)        # every part is set-up or a run


@pytest.mark.parametrize("command", sorted(c for c in {**RUN, **SKIP} if "--config=" in c))
def test_documented_config_loads_and_validates(command):
  """The config a documented command names, with its overrides, as the run would see it."""
  run = RUN.get(command, dc.Run())
  for part in dc.parts(command) if command in RUN else [command]:
    config_arg, overrides = dc.config_args(part, run.subs)
    if config_arg:
      config = dc.load_config(os.path.join(ROOT, config_arg), overrides)
      config_lib.validate(config)
      for o in overrides:                    # each override reached its field
        key, value = o[len("--config."):].split("=", 1)
        node = config
        for k in key.split("."):
          node = node[k]
        assert str(node).lower() == value.lower() or node == type(node)(value), (o, node)


def _run_command(command, tmp, data_dir):
  run = RUN[command]
  if run.after:
    _run_command(run.after, tmp, data_dir)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  for part in dc.parts(command):
    args = dc.argv(part, run, tmp, data_dir)
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-4000:])


@pytest.mark.slow   # minutes: every documented run, shortened
@pytest.mark.parametrize("command", sorted(RUN))
def test_documented_command_runs(tmp_path, command):
  run = RUN[command]
  data_dir = dc.write_data(run.data, str(tmp_path / "data")) if run.data else ""
  _run_command(command, str(tmp_path), data_dir)
  for rel in run.expect:
    path = tmp_path / rel
    assert path.exists(), f"{command}: {rel} missing"
    if path.name == "summary.json":
      assert json.loads(path.read_text())["global_iterations"] == 1
