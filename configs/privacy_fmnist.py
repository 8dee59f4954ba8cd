r"""The privacy/accuracy trade-off on real Fashion-MNIST (paper App. I), at a scale that runs on
a 2-core CPU: GAS, AlexNet (split by launch/privacy.py at L1, L2, L3), K=20 clients with IID
data, C=5 of them per global iteration, E=5 local iterations of B=32, SGD lr 0.05 (the paper's
0.01 leaves AlexNet at chance for the first iterations), T=4 global iterations, test accuracy on
1,000 fixed test images (`eval_examples`). The simulated decoder of `privacy.method=inversion`
is ResSFL's res_normN4C64 shrunk to N2C32 for time. Everything else is configs/fmnist.py's.

The study, one command (3 splits x 4 defences x 2 seeds = 24 cells, then the attack on each;
54 minutes of cell time on a 2-core CPU, 2026-12-02):

    python launch/privacy.py --config=configs/privacy_fmnist.py --workdir=runs/privacy \
        --config.data.dir=/usr/share/datasets/fashion-mnist

Real data: Debian's `apt-get install dataset-fashion-mnist`. One cell:
`python -m gas_jax.main --config=configs/privacy_fmnist.py --config.privacy.method=nopeek
--config.privacy.gamma=3 --config.data.dir=/usr/share/datasets/fashion-mnist --workdir=RUN`,
then `python -m gas_jax.attack --workdir=RUN --aux=1000 --epochs=5 --blocks=2 --channels=32`.
This is the early phase of training, not the paper's accuracy: the table compares leaks and
costs between defences at equal training, nothing more. Expected (seeds 0, 1): undefended
attack SSIM 0.85 at L1, 0.62 at L2, 0.58 at L3, test accuracy 30-35 %; results and findings:
docs/privacy.md, "The trade-off on real Fashion-MNIST", and docs/results/privacy_fmnist/.
"""
from configs import _args
from configs import fmnist


def get_config(arg: str = ""):
  _args.parse(arg, {}, "configs/privacy_fmnist.py")    # takes no argument
  c = fmnist.get_config("iid")
  c.clients.participating = 5
  c.clients.local_iters = 5
  c.optimizer.lr = 0.05
  c.num_global_iters = 4
  c.eval_examples = 1000
  c.privacy.decoder_blocks = 2
  c.privacy.decoder_channels = 32
  return c
