r"""Fig. 2 of the paper: gradient dissimilarity and accuracy with and without generation.

Fashion-MNIST, shard=2, K=10 clients, C=3 concurrent, otherwise the FMNIST setting of Table 1
(AlexNet L2, E=20, B=32, T=1000; the figure's horizon is not stated). The gradient dissimilarity
of every server update (spec §1.10) is logged (`grad_dissimilarity.enabled`). The argument picks
the curve: "gen" (GAS, the default) or "nogen" (GAS without generative activations):

    python -m gas_jax.main --config=configs/fig2_fmnist.py:gen --config.data.dir=/path/to/data \
        --workdir=/tmp/gas_fig2_gen
    python -m gas_jax.main --config=configs/fig2_fmnist.py:nogen --config.data.dir=/path/to/data \
        --workdir=/tmp/gas_fig2_nogen

`data.dir` as for configs/fmnist.py. Paper: curves only (no number); Fig. 2(a) shows a lower
gradient dissimilarity and Fig. 2(b) faster convergence and higher accuracy with generation.
"""
from configs import _args
from configs import fmnist

ARGS = ("gen", "nogen")


def get_config(arg: str = ""):
  parsed = _args.parse(arg, {"curve": _args.choice_token(*ARGS)}, "configs/fig2_fmnist.py")
  c = fmnist.get_config("shard2")
  c.clients.num = 10
  c.clients.participating = 3
  c.generate = parsed.get("curve", "gen") == "gen"
  c.grad_dissimilarity.enabled = True
  return c
