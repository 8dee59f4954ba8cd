r"""Table 5 of the paper: other architectures on CIFAR-10 (ViT-small, ResNet18).

K=20, C=10, E=20, B=32, T=2000 as Table 1. The argument is the model and the partition, e.g.

    python -m gas_jax.main --config=configs/table5_models.py:vit_small:shard2 \
        --config.data.dir=/path/to/data --workdir=/tmp/gas_table5_vit_shard2
    python -m gas_jax.main --config=configs/table5_models.py:resnet18:dir0.1 \
        --config.data.dir=/path/to/data --workdir=/tmp/gas_table5_resnet18_dir0.1

The whole table (FedAvg, FedBuff, CA2FL, GAS x 3 seeds): `launch/table5.sh DATA_DIR OUT_DIR`.

- vit_small: 6 blocks, 8 heads, MLP 512, dropout 0.1, split after block 1 (65x512 = 33,280-dim
  activations), Adam lr 1e-4 (paper). Patch size 4 and width 512 are our guess (spec §3.5).
- resnet18: CIFAR ResNet18 split after residual stage 1 (32x32x64 = 65,536-dim activations),
  SGD lr 0.005 (paper).
Full covariances of these sizes do not fit (10 x 65,536^2 floats = 172 GB), so the Gaussian
statistics are diagonal (`stats.covariance="diag"`, REF's commented-out variant; spec §3.5),
with that variant's generation rule (`stats.diag_rule="ref"`, the default: exactly B rows per
label, samples mu + sqrt(var + 1e-5) eps; "topup" keeps the full-covariance rule).
The paper has no code for this table; its clock is the model's own (`time.ref_constants=False`:
client FLOPs, activation and model bits computed from the network).

Paper, Table 5 (test accuracy %, mean ± std over 3 seeds):

| model     | arg                  | FedAvg     | FedBuff    | CA2FL      | GAS        |
|-----------|----------------------|------------|------------|------------|------------|
| ViT-small | vit_small:shard2     | 70.85±0.68 | 58.46±2.18 | 68.27±0.11 | 79.81±1.43 |
| ViT-small | vit_small:dir0.1     | 68.95±1.36 | 59.84±3.64 | 70.58±1.20 | 72.89±4.75 |
| ResNet18  | resnet18:shard2      | 34.47±2.51 | 31.83±3.45 | 37.81±8.77 | 83.58±5.62 |
| ResNet18  | resnet18:dir0.1      | 75.39±7.04 | 72.73±6.71 | 76.28±7.16 | 80.73±1.21 |

No argument means vit_small:shard2.
"""
from configs import _args
from configs import cifar10

MODELS = {"vit_small": dict(split="L1", optimizer="adam", lr=1e-4),
          "resnet18": dict(split="L1", optimizer="sgd", lr=0.005)}
ARGS = tuple(f"{m}:{p}" for m in MODELS for p in ("shard2", "dir0.1"))
_TOKENS = {"model": _args.choice_token(*MODELS), "partition": _args.PARTITION}


def get_config(arg: str = ""):
  parsed = _args.parse(arg, _TOKENS, "configs/table5_models.py")
  c = cifar10.get_config(parsed.get("partition", "shard2"))
  name = parsed.get("model", "vit_small")
  c.model.name = name
  c.model.split = MODELS[name]["split"]
  c.optimizer.name = MODELS[name]["optimizer"]
  c.optimizer.lr = MODELS[name]["lr"]
  c.stats.covariance = "diag"
  c.time.ref_constants = False
  return c
