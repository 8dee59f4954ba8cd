"""The privacy/accuracy trade-off report of `launch/privacy.py` (paper App. I).

Layout: ROOT/<split>/<defence>/seed<k>/ holds a run (summary.json, metrics.jsonl) and the attack
on it (attack.json, `gas_jax.privacy.attack`). `write_report` reads only those files and writes
ROOT/results.md (one row per defence and split: test accuracy, and the attack's MSE, PSNR and
SSIM, each the mean ± std over the seeds whose run and attack finished, std with ddof=0) and
ROOT/accuracy_vs_ssim.png (one point per row, error bars ± std, one marker per split).
"""
import os
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib
import numpy as np

from gas_jax import cell_results
from gas_jax import metrics as metrics_lib
from gas_jax import report as report_lib
from gas_jax.errors import RunError

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top

COLUMNS = (("accuracy", "test accuracy (%)", 100.0), ("mse", "attack MSE", 1.0),
           ("psnr", "PSNR (dB)", 1.0), ("ssim", "SSIM", 1.0))


def defence_label(method: str, gamma: Optional[float], tau: Optional[float] = None) -> str:
  """'none', 'nopeek_g1', 'inversion_g0.3', 'inversion_g3_t0' (a defence's folder and row
  name; tau when given)."""
  if method == "none":
    return "none"
  return f"{method}_g{gamma:g}" + ("" if tau is None else f"_t{tau:g}")


def cell_dir(root: str, split: str, defence: str, seed: int) -> str:
  return os.path.join(root, split, defence, f"seed{seed}")


def _read(path: str) -> Optional[Dict]:
  """The JSON object in `path`, None if there is none; ResultsFileError (one line naming the
  file) if it is unreadable."""
  if not os.path.exists(path):
    return None
  value = cell_results.read_json(path, os.path.basename(path))
  if not isinstance(value, dict):
    raise cell_results.ResultsFileError(f"{path}: unreadable (not a JSON object)")
  return value


def cell_values(workdir: str) -> Optional[Dict[str, float]]:
  """accuracy (summary.json's final_accuracy) and the attack's mse/psnr/ssim of one run, or
  None unless both the run and its attack have finished."""
  summary, attack = (_read(os.path.join(workdir, f)) for f in ("summary.json", "attack.json"))
  if summary is None or attack is None:
    return None
  return dict(accuracy=summary["final_accuracy"], evals=float(metrics_lib.final_evals(summary)),
              mse=attack["mse"], psnr=attack["psnr"],
              ssim=attack["ssim"], baseline_ssim=attack["baseline"]["ssim"],
              baseline_mse=attack["baseline"]["mse"], baseline_psnr=attack["baseline"]["psnr"])


def aggregate(values: Sequence[Dict[str, float]]) -> Dict[str, Tuple[float, float]]:
  """key -> (mean, std with ddof=0) over the seeds' values."""
  return {k: (float(np.mean([v[k] for v in values])), float(np.std([v[k] for v in values])))
          for k in values[0]}


def collect(root: str, splits: Sequence[str], defences: Sequence[str], seeds: Sequence[int],
            cells=None) -> Dict[Tuple[str, str], Tuple[int, Dict[str, Tuple[float, float]]]]:
  """(split, defence) -> (number of seeds, aggregate) over the finished cells (`cells`: only
  those (split, defence, seed) count, if given)."""
  out = {}
  for split in splits:
    for d in defences:
      vals = [cell_values(cell_dir(root, split, d, s)) for s in seeds
              if cells is None or (split, d, s) in cells]
      vals = [v for v in vals if v is not None]
      if vals:
        out[(split, d)] = (len(vals), aggregate(vals))
  return out


def window_note(root: str, splits, defences, seeds, cells=None) -> str:
  """final_accuracy's window over the reported cells, with the true count of evaluations
  (`metrics.evals_phrase`: a range when the cells differ)."""
  counts = [int(v["evals"]) for v in (
      cell_values(cell_dir(root, split, d, s)) for split in splits for d in defences
      for s in seeds if cells is None or (split, d, s) in cells) if v is not None]
  return metrics_lib.evals_phrase(counts) if counts else "mean of the last 5 evaluations"


def results_table(rows, splits: Sequence[str], defences: Sequence[str], seeds) -> str:
  head = "| split | defence | seeds | " + " | ".join(c[1] for c in COLUMNS) + " |"
  lines = [head, "|" + "---|" * (3 + len(COLUMNS))]
  for split in splits:
    for d in defences:
      if (split, d) not in rows:
        lines.append(f"| {split} | {d} | 0/{len(seeds)} | " + " | ".join("-" for _ in COLUMNS)
                     + " |")
        continue
      n, agg = rows[(split, d)]
      digits = {"mse": 4, "ssim": 3}
      cols = [f"{agg[k][0] * scale:.{digits.get(k, 2)}f} ± "
              f"{agg[k][1] * scale:.{digits.get(k, 2)}f}" for k, _, scale in COLUMNS]
      lines.append(f"| {split} | {d} | {n}/{len(seeds)} | " + " | ".join(cols) + " |")
  return "\n".join(lines) + "\n"


def plot(rows, splits: Sequence[str], defences: Sequence[str], path: str) -> None:
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  markers = "osD^v<>"
  colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for i, split in enumerate(splits):
    for j, d in enumerate(defences):
      if (split, d) not in rows:
        continue
      _, agg = rows[(split, d)]
      ax.errorbar(agg["ssim"][0], 100 * agg["accuracy"][0], xerr=agg["ssim"][1],
                  yerr=100 * agg["accuracy"][1], fmt=markers[i % len(markers)],
                  color=colours[j % len(colours)], capsize=3,
                  label=f"{split} {d}")
  baselines = [rows[k][1]["baseline_ssim"][0] for k in rows]
  if baselines:
    ax.axvline(float(np.mean(baselines)), color="grey", ls="--", lw=1,
               label="mean-image guess")
  ax.set_xlabel("attack SSIM (lower = less leak)")
  ax.set_ylabel("test accuracy (%)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  report_lib.save_figure(fig, path)


def write_report(root: str, splits: Sequence[str], defences: Sequence[str],
                 seeds: Sequence[int], header: List[str], cells=None) -> Dict[str, str]:
  """results.md and accuracy_vs_ssim.png in `root`; `header`: lines that say how the cells
  were run (config, attack settings)."""
  rows = collect(root, splits, defences, seeds, cells)
  if not rows:
    raise RunError("no cell of this study finished (run and attack) with this config: "
                   "results.md not written (check the overrides and the attack settings)")
  base = [rows[k][1] for k in rows]
  window = window_note(root, splits, defences, seeds, cells)
  guess = ("" if not base else
           f"Mean-image guess (the attacker who learned nothing), over all cells: MSE "
           f"{np.mean([b['baseline_mse'][0] for b in base]):.4f}, PSNR "
           f"{np.mean([b['baseline_psnr'][0] for b in base]):.2f} dB, SSIM "
           f"{np.mean([b['baseline_ssim'][0] for b in base]):.3f}.\n")
  md = ["# Privacy / accuracy trade-off", "", *header, "",
        f"Mean ± std (ddof=0) over seeds {', '.join(map(str, seeds))}; test accuracy is "
        f"`final_accuracy` ({window}); the attack's MSE, PSNR and SSIM "
        "are on the training images it reconstructs from their activations "
        "(`python -m gas_jax.attack`). Lower SSIM/PSNR and higher MSE: less leak.", "",
        results_table(rows, splits, defences, seeds), guess]
  paths = dict(table=os.path.join(root, "results.md"),
               plot=os.path.join(root, "accuracy_vs_ssim.png"))
  os.makedirs(root, exist_ok=True)
  plot(rows, splits, defences, paths["plot"])
  metrics_lib.atomic_write(paths["table"], "\n".join(md))
  return paths
