r"""Table 4 of the paper: the split-layer ablation (GAS, CIFAR-10, shard=3, T=1000).

K=20, C=10, E=20, B=32. The argument is the split, L1 (shallowest) .. L4, optionally with the
model ("alexnet", the default, or "vgg16"), e.g.

    python -m gas_jax.main --config=configs/table4_split.py:L1 --config.data.dir=/path/to/data \
        --workdir=/tmp/gas_table4_alexnet_L1
    python -m gas_jax.main --config=configs/table4_split.py:vgg16:L1 \
        --config.data.dir=/path/to/data --workdir=/tmp/gas_table4_vgg16_L1

AlexNet L1/L2/L3/L4 cut after paper layers 3/6/7/11, VGG16 after layers 10/17/24/31 (spec §3.1,
§3.3). The simulated clock keeps REF's AlexNet-L2 constants for every split, as REF does
(`time.ref_constants`; set it False for the model's own constants).

Paper, Table 4 (GAS test accuracy %, mean ± std over 3 seeds):

| split | AlexNet arg | GAS        | VGG16 arg | GAS        |
|-------|-------------|------------|-----------|------------|
| L1    | L1          | 82.71±1.73 | vgg16:L1  | 87.63±0.84 |
| L2    | L2          | 82.50±0.97 | vgg16:L2  | 84.27±0.82 |
| L3    | L3          | 82.07±0.65 | vgg16:L3  | 76.36±3.69 |
| L4    | L4          | 72.02±4.39 | vgg16:L4  | 79.01±2.92 |

No argument means alexnet:L2. The whole table (3 seeds each): `launch/table4.sh DATA_DIR OUT_DIR`.
"""
from configs import _args
from configs import cifar10

MODELS = ("alexnet", "vgg16")
SPLITS = ("L1", "L2", "L3", "L4")
ARGS = SPLITS + tuple(f"vgg16:{s}" for s in SPLITS)
_TOKENS = {"split": _args.choice_token(*SPLITS), "model": _args.choice_token(*MODELS)}


def get_config(arg: str = ""):
  parsed = _args.parse(arg, _TOKENS, "configs/table4_split.py")
  c = cifar10.get_config("shard3")
  c.num_global_iters = 1000
  c.model.name = parsed.get("model", "alexnet")
  c.model.split = parsed.get("split", "L2")
  return c
