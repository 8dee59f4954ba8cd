r"""Draws the paper's figures from finished comparison folders (`gas_jax.figures`).

    python launch/figures.py fig2 --workdir=OUT [--out=OUT/fig2a_dissimilarity.png]
    python launch/figures.py fig4 --workdir=OUT --local_iters=10,20,35,50 \
        --methods=fedbuff,ca2fl,gas [--out=OUT/fig4_accuracy_vs_time.png]

fig2: Fig. 2(a), the gradient dissimilarity of GAS and GAS without generation against the
global iteration, from OUT/<partition>/{gas,gas_nogen}/seed<k> (`launch/fig2.sh`). fig4: Fig. 4,
test accuracy against simulated time (minutes) for every E on one axis, from
OUT/E<e>/<partition>/<method>/seed<k> (`launch/table2.sh`). Every finished run found there
counts (run folders or packed results); the PNG's path is printed.
"""
import sys

from absl import app, flags

from gas_jax import figures

_WORKDIR = flags.DEFINE_string("workdir", None, "Comparison folder (launch/fig2.sh's or "
                               "launch/table2.sh's OUT_DIR).")
_OUT = flags.DEFINE_string("out", "", "PNG to write (default: in --workdir).")
_LOCAL_ITERS = flags.DEFINE_list("local_iters", ["10", "20", "35", "50"],
                                 "fig4: the E of the folders WORKDIR/E<e>.")
_METHODS = flags.DEFINE_list("methods", ["fedbuff", "ca2fl", "gas"], "fig4: methods drawn.")
flags.mark_flags_as_required(["workdir"])

DEFAULT_NAMES = dict(fig2="fig2a_dissimilarity.png", fig4="fig4_accuracy_vs_time.png")


def main(argv):
  if len(argv) != 2 or argv[1] not in DEFAULT_NAMES:
    raise app.UsageError(f"usage: figures.py {{{','.join(DEFAULT_NAMES)}}} --workdir=DIR")
  which, root = argv[1], _WORKDIR.value
  out = _OUT.value or f"{root.rstrip('/')}/{DEFAULT_NAMES[which]}"
  if which == "fig2":
    drawn = figures.plot_dissimilarity(root, out)
  else:
    try:
      es = [int(e) for e in _LOCAL_ITERS.value]
    except ValueError:
      sys.exit(f"error: --local_iters={','.join(_LOCAL_ITERS.value)} must be integers")
    drawn = figures.plot_local_iters({e: f"{root.rstrip('/')}/E{e}" for e in es}, out,
                                     _METHODS.value)
  if not drawn:
    sys.exit(f"error: no finished runs under {root} to draw {which} from")
  print(out)


if __name__ == "__main__":
  app.run(main)
