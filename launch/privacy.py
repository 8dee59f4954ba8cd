r"""The privacy/accuracy trade-off of a split method (paper App. I), one command:

    python launch/privacy.py --config=configs/privacy_fmnist.py --workdir=runs/privacy \
        --config.data.dir=/usr/share/datasets/fashion-mnist \
        [--splits=L1,L2,L3 --defences=none,inversion:0.3:0,inversion:3:0,nopeek:3 --seeds=0,1
         --jobs=1 --aux=1000 --targets=100 --epochs=5 --blocks=2 --channels=32
         --config.x=v ...]

Every (split, defence, seed) cell trains the config's method (GAS by default) split at
`model.split` with `privacy.method`/`.gamma`/`.tau` from the defence ("none", "nopeek:GAMMA"
or "inversion:GAMMA[:TAU]"; the default's inversion cells use tau = 0, so that ResSFL's hinge
max(SSIM - tau, 0) is active from the first step: the simulated decoder is not warmed up and
stays under SSIM 0.5 for most of a short run), in DIR/<split>/<defence>/seed<k>
(`python -m gas_jax.main`, log in log.txt), then attacks the finished run
(`python -m gas_jax.attack --workdir=CELL` with --aux/--targets/--epochs/--blocks/--channels/
--attack_seed; the attack's line goes to the same log; its defaults here are a CPU-sized
attacker: 5 epochs over 1,000 auxiliary images with a res_normN2C32 decoder, weaker than
ResSFL's 50 epochs of N4C64, so the leak it measures is a lower bound). Cells whose run finished with this very config and whose
attack.json was made with these attack settings after the run are skipped; an interrupted cell
resumes (`gas_jax.cells`). Then DIR/results.md (accuracy, MSE, PSNR, SSIM: mean ± std over
seeds) and DIR/accuracy_vs_ssim.png are written from every finished cell
(`gas_jax.privacy.report`). Exits non-zero if any cell failed.
"""
import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from gas_jax import cell_results, cell_processes, cells
from gas_jax import config as config_lib
from gas_jax.privacy import report

_CONFIG = config_flags.DEFINE_config_file("config", None, "Base experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Root directory of the study.")
_SPLITS = flags.DEFINE_list("splits", ["L1", "L2", "L3"], "Split points (model.split values).")
_DEFENCES = flags.DEFINE_list(
    "defences", ["none", "inversion:0.3:0", "inversion:3:0", "nopeek:3"],
    "'none', nopeek:GAMMA or inversion:GAMMA[:TAU] (privacy.method, .gamma, .tau).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1"], "Seeds (config.seed values).")
_JOBS = flags.DEFINE_integer("jobs", 1, "Cells at once; the CPU cores are split among them.")
_AUX = flags.DEFINE_integer("aux", 1000, "Attack: auxiliary pairs (test images) for the decoder.")
_TARGETS = flags.DEFINE_integer("targets", 100, "Attack: training images reconstructed.")
_EPOCHS = flags.DEFINE_integer("epochs", 5, "Attack: decoder training epochs.")
_BLOCKS = flags.DEFINE_integer("blocks", 2, "Attack: residual blocks N of its decoder "
                               "res_normN{N}C{C} (ResSFL's: 4).")
_CHANNELS = flags.DEFINE_integer("channels", 32, "Attack: channels C of its decoder (ResSFL's: "
                                 "64).")
_ATTACK_SEED = flags.DEFINE_integer("attack_seed", 0, "Attack: seed of its draws and decoder.")
flags.mark_flags_as_required(["config", "workdir"])

_OWN = ("--config.model.split", "--config.privacy.method", "--config.privacy.gamma",
        "--config.privacy.tau", "--config.seed")
METHODS = ("none", "inversion", "nopeek")


def parse_defence(text: str):
  """'none' -> ('none', None, None); 'nopeek:3' -> ('nopeek', 3.0, None);
  'inversion:0.3:0' -> ('inversion', 0.3, 0.0) (gamma; tau, inversion only; None: the
  config's)."""
  method, *rest = text.split(":")
  bad = (method not in METHODS or (method == "none") != (not rest) or len(rest) > 2
         or (len(rest) == 2 and method != "inversion"))
  if bad:
    raise ValueError(f"--defences: {text!r} is not 'none', nopeek:GAMMA or "
                     "inversion:GAMMA[:TAU]")
  try:
    nums = [float(v) for v in rest]
  except ValueError:
    raise ValueError(f"--defences: {text!r}: GAMMA and TAU must be numbers") from None
  return method, (nums[0] if nums else None), (nums[1] if len(nums) > 1 else None)


def attack_settings():
  return dict(aux=_AUX.value, targets=_TARGETS.value, epochs=_EPOCHS.value,
              blocks=_BLOCKS.value, channels=_CHANNELS.value, seed=_ATTACK_SEED.value)


def attack_done(workdir: str, settings) -> bool:
  """Whether attack.json was made with these settings, on the run as it finished."""
  path, summary = (os.path.join(workdir, f) for f in ("attack.json", "summary.json"))
  if not (os.path.exists(path) and os.path.exists(summary)):
    return False
  if os.path.getmtime(path) < os.path.getmtime(summary):
    return False
  with open(path) as f:
    stored = dict(json.load(f).get("settings", {}))
  stored["aux"] = stored.get("aux_requested", stored.get("aux"))   # 0 = all, as asked
  return all(stored.get(k) == v for k, v in settings.items())


def make_cell(root, config, config_arg, overrides, split, defence, seed) -> cells.Cell:
  method, gamma, tau = parse_defence(defence)
  label = report.defence_label(method, gamma, tau)
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.model.split, c.privacy.method, c.seed = split, method, seed
    own = [f"--config.model.split={split}", f"--config.privacy.method={method}",
           f"--config.seed={seed}"]
    if gamma is not None:
      c.privacy.gamma = gamma
      own.append(f"--config.privacy.gamma={gamma}")
    if tau is not None:
      c.privacy.tau = tau
      own.append(f"--config.privacy.tau={tau}")
  config_lib.validate(c)
  wd = report.cell_dir(root, split, label, seed)
  settings = attack_settings()
  attack = [sys.executable, "-m", "gas_jax.attack", f"--workdir={wd}",
            *(f"--{k}={v}" for k, v in settings.items())]
  return cells.Cell(name=f"{split}/{label}/seed{seed}", workdir=wd, config=c,
                    argv=[config_arg, *overrides, *own], after=[attack],
                    after_done=lambda: attack_done(wd, settings))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  config, root = _CONFIG.value, _WORKDIR.value
  config_arg, given = cells.user_args(sys.argv[1:], _OWN, "privacy.py")
  overrides = given + cells.cache_args(root, given)
  try:
    check_flags()
    try:
      seeds = [int(s) for s in _SEEDS.value]
    except ValueError:
      raise ValueError(f"--seeds={','.join(_SEEDS.value)} must be integers") from None
    seeds = cell_results.unique(seeds, "--seeds")
    cell_results.unique(_SPLITS.value, "--splits")
    cell_results.unique(_DEFENCES.value, "--defences")
    keys = [(p, d, s) for p in _SPLITS.value for d in _DEFENCES.value for s in seeds]
    label_of = {d: report.defence_label(*parse_defence(d)) for d in _DEFENCES.value}
    labels = [label_of[d] for d in _DEFENCES.value]
    if len(set(labels)) < len(_DEFENCES.value):
      raise ValueError(f"--defences={','.join(_DEFENCES.value)} names a defence twice")
    grid = {k: make_cell(root, config, config_arg, overrides, *k) for k in keys}
    states = {k: cells.state(c) for k, c in grid.items()}
  except (ValueError, config_lib.ConfigError, config_lib.RunError) as e:
    sys.exit(f"error: {' '.join(str(e).split())}")
  failed = [grid[k].name for k, st in states.items() if st not in ("todo", "done")]
  for k in keys:
    if states[k] not in ("todo", "done"):
      logging.error("%s: %s; not run", grid[k].name, states[k])
  todo = [grid[k] for k in keys if states[k] == "todo"]
  logging.info("%d cells, %d already done, %d to run with %d job(s)", len(keys),
               sum(st == "done" for st in states.values()), len(todo), _JOBS.value)
  failed += cell_processes.run_cells(todo, _JOBS.value).failed
  a = attack_settings()
  header = [f"Cells: `{config_arg}` {' '.join(given)} with "
            f"`--config.algorithm={config.algorithm}`; attack: `python -m gas_jax.attack "
            f"--aux={a['aux']} --targets={a['targets']} --epochs={a['epochs']} "
            f"--blocks={a['blocks']} --channels={a['channels']} --seed={a['seed']}`."]
  try:
    done = {(p, label_of[d], s) for p, d, s in keys
            if cells.state(grid[(p, d, s)]) == "done"}
    paths = report.write_report(root, _SPLITS.value, labels, seeds, header, cells=done)
  except config_lib.RunError as e:
    sys.exit(f"error: {' '.join(str(e).split())}" +
             (f"; failed cells: {', '.join(failed)}" if failed else ""))
  cells.finish(paths, failed)


def check_flags() -> None:
  """The attack's and the launcher's numeric flags, one line naming the flag."""
  for flag, low in ((_JOBS, 1), (_TARGETS, 1), (_EPOCHS, 1), (_BLOCKS, 1), (_CHANNELS, 1),
                    (_AUX, 0)):
    if flag.value < low:
      raise ValueError(f"--{flag.name}={flag.value} is invalid: at least {low}")


if __name__ == "__main__":
  app.run(cell_processes.exit_on_signals(main))
