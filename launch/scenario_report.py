r"""One table and one plot over the scenario comparisons of `launch/scenarios.sh`.

    python launch/scenario_report.py --workdir=OUT --methods=gas,fedavg,... \
        --scenarios=always,markov30,dropout20,lognormal1

Reads each OUT/<scenario>/cells.json (the cells that counted in that comparison: one source of
truth per cell, `gas_jax.cell_results.load_counted`) and writes OUT/scenarios.md (per method and
scenario: final accuracy, simulated seconds to each time-to-accuracy target, simulated time at
the end and updates lost, mean ± std over the seeds, ddof=0) and OUT/scenarios.png (mean test
accuracy against simulated time, one subplot per scenario).
"""
import os
import sys

from absl import app, flags

from gas_jax import cell_results, metrics, report

_WORKDIR = flags.DEFINE_string("workdir", None, "launch/scenarios.sh's OUT_DIR.")
_METHODS = flags.DEFINE_list("methods", None, "Methods (rows).")
_SCENARIOS = flags.DEFINE_list("scenarios", None, "Scenario folders under --workdir.")
flags.mark_flags_as_required(["workdir", "methods", "scenarios"])


def _fmt(values, scale=1.0, digits=1):
  if not values:
    return "-"
  mean, std = report.cell_stats([scale * v for v in values])
  return f"{mean:.{digits}f} ± {std:.{digits}f}"


def table(found, methods, scenarios) -> str:
  """Markdown: one row per (method, scenario)."""
  targets = sorted({float(k) for res in found.values() for s, _ in res.values()
                    for k in (s.get("time_to_accuracy") or {})})
  head = (["method", "scenario", "seeds", "final accuracy (%)"] +
          [f"time to {100 * t:g} % (sim. s, reached)" for t in targets] +
          ["simulated time at the end (s)", "updates lost"])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for m in methods:
    for sc in scenarios:
      runs = [v for (p, mm, s), v in sorted(found[sc].items()) if mm == m]
      if not runs:
        continue
      cols = [m, sc, str(len(runs)), _fmt([s["final_accuracy"] for s, _ in runs], 100.0, 2)]
      for t in targets:
        secs = [x for x in (report.seconds_to(s, rows, t) for s, rows in runs) if x is not None]
        cols.append(f"{_fmt(secs)} ({len(secs)}/{len(runs)})")
      cols += [_fmt([s["simulated_time_s"] for s, _ in runs]),
               _fmt([s.get("updates_lost_total", 0) for s, _ in runs], digits=1)]
      lines.append("| " + " | ".join(cols) + " |")
  return "\n".join(lines) + "\n"


def plot(found, methods, scenarios, path) -> None:
  plt = report.plt
  fig, axes = plt.subplots(1, len(scenarios), figsize=(5.0 * len(scenarios), 4.2), squeeze=False)
  for ax, sc in zip(axes[0], scenarios):
    for m in methods:
      curves = []
      for (p, mm, s), (_, rows) in sorted(found[sc].items()):
        if mm == m:
          x, y = report.accuracy_points(rows, "simulated_time_s")
          if len(x):
            curves.append((x, y))
      if curves:
        grid, mean, _ = report.mean_curve(curves)
        ax.plot(grid, mean, label=f"{m} (n={len(curves)})", lw=1.4)
    ax.set_xscale("log")
    ax.set_title(sc)
    ax.set_xlabel("simulated time (s, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize=7, loc="lower right")
  report.save_figure(fig, path)


def main(argv):
  del argv
  root, methods, scenarios = _WORKDIR.value, _METHODS.value, _SCENARIOS.value
  try:
    found = {sc: cell_results.load_counted(os.path.join(root, sc)) for sc in scenarios}
  except cell_results.ResultsFileError as e:
    sys.exit(f"error: {e}")
  missing = [sc for sc in scenarios if not found[sc]]
  if len(missing) == len(scenarios):
    sys.exit(f"error: no scenario under {root} has a finished comparison (cells.json)")
  md = ["# Clients that come and go: digits, shard2", "",
        "Mean ± std (ddof=0) over the seeds of each (method, scenario); final accuracy is "
        "`final_accuracy` (mean of the last evaluations); time to accuracy counts only the seeds "
        "that reached the target (reached/finished).", "", table(found, methods, scenarios)]
  if missing:
    md.append(f"No finished cells for: {', '.join(missing)}.\n")
  metrics.atomic_write(os.path.join(root, "scenarios.md"), "\n".join(md))
  plot(found, methods, scenarios, os.path.join(root, "scenarios.png"))
  print(os.path.join(root, "scenarios.md"))


if __name__ == "__main__":
  app.run(main)
