"""The model-inversion attack on a trained split run: how much of the clients' images the server
could rebuild from their activations (spec/privacy.md §1, ResSFL's evaluation; paper App. I).

    python -m gas_jax.attack --workdir=RUN [--aux=N --targets=N --epochs=E --batch_size=B
                                            --blocks=N --channels=C --seed=S]

Threat model (ResSFL): the server sees the smashed data z = h(theta; x) and holds a copy of the
client model theta (here: the run's newest checkpoint, `runner.eval_params()[0]`, the model the
run evaluates). It trains a fresh decoder g = res_normN{N}C{C} (`gas_jax.privacy.decoder`;
default N4C64, Adam 1e-3, MSE, batch 32, 50 epochs) on auxiliary pairs (h(theta; x), x) made
from the test split (images never trained on; `--aux` of them, default all), then reconstructs
`--targets` training images (the clients' data, drawn with `--seed`) from their activations.

Measured on the targets, in [0, 1] (`gas_jax.privacy.images.to_unit`, the train set's range):
MSE, PSNR = 10 log10(1 / MSE) and SSIM (`gas_jax.privacy.similarity`), each the mean over the
targets with its per-image standard deviation. For scale, `baseline` holds the same figures for
the attacker who knows nothing but the auxiliary images: every target guessed as their mean
image. Less leakage: lower SSIM and PSNR, higher MSE (towards the baseline).

Writes RUN/attack.json (atomically) and RUN/reconstructions.png (8 targets over their
reconstructions). Refused with one line: FL baselines (fedavg, fedbuff, ca2fl send whole models,
no activations), a run without checkpoint, a multi-seed workdir (attack RUN/seed<s>), a setting
out of range (`check_settings`, naming its flag), and a run in use: the attack holds RUN's
workdir lock (`gas_jax.workdir.WorkdirLock`, exclusive) from reading the checkpoint to writing
its files, so it never attacks a checkpoint of a run still training (whose rotation could also
delete it mid-read) nor writes into a live run, two attacks never mix their attack.json and
PNG, and a training started during the attack stops with one line naming it.
Epochs run as one jitted `lax.scan` each; each epoch draws a permutation of the auxiliary set
(numpy, from --seed) and takes floor(aux / batch) full batches (the remainder waits for a later
permutation). The decoder's initialisation comes from PRNGKey(--seed).
"""
import dataclasses
import json
import os
import time
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from gas_jax import checkpoint
from gas_jax import context as context_lib
from gas_jax import metrics as metrics_lib
from gas_jax import runners
from gas_jax import workdir as workdir_lib
from gas_jax.errors import ConfigError, RunError
from gas_jax.privacy import decoder as decoder_lib
from gas_jax.privacy import images, similarity

NO_ACTIVATIONS = ("fedavg", "fedbuff", "ca2fl")   # the clients upload models, never activations
CHUNK = 512             # rows per jitted call when computing activations
GRID = 8                # targets shown in reconstructions.png


@dataclasses.dataclass(frozen=True)
class AttackSettings:
  """The attacker's budget and decoder. aux=0: the whole test split."""
  aux: int = 0
  targets: int = 100
  epochs: int = 50
  batch_size: int = 32
  blocks: int = 4
  channels: int = 64
  lr: float = 1e-3
  seed: int = 0


# The attack's settings: (lowest value, what it is). --aux and --targets are also checked
# against the dataset's sizes (`_pick`).
LIMITS = dict(aux=(0, "auxiliary pairs from the test split; 0 = all of them"),
              targets=(1, "training images reconstructed"),
              epochs=(1, "decoder training epochs"),
              batch_size=(1, "decoder training batch size"),
              blocks=(0, "residual blocks N of the decoder res_normN{N}C{C}"),
              channels=(1, "channels C of the decoder res_normN{N}C{C}"),
              seed=(0, "seed of the draws and the decoder"))
MAX_SEED = 2**31 - 1


def check_settings(settings: AttackSettings) -> None:
  """Raises ConfigError, one line naming the flag, for a setting out of range."""
  for name, (low, what) in LIMITS.items():
    v = getattr(settings, name)
    high = MAX_SEED if name == "seed" else None
    if isinstance(v, bool) or not isinstance(v, int) or v < low or (high and v > high):
      allowed = f"{low} <= n <= {high}" if high else f"n >= {low}"
      raise ConfigError(f"--{name}={v!r}: must be an integer {allowed} ({what})")
  if not (isinstance(settings.lr, float) and np.isfinite(settings.lr) and settings.lr > 0):
    raise ConfigError(f"lr={settings.lr!r}: must be a finite float > 0 (Adam's learning rate)")


@dataclasses.dataclass
class Victim:
  """A trained split run as the attacker sees it: its config and data, the client model
  theta and h(theta; x), and the global iteration of the checkpoint it came from."""
  config: Any
  ctx: Any
  client_params: Any
  client_apply: Callable
  step: int


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """RUN/config.json as a ConfigDict (without `execution_plan`), after the refusals that need
  no data: not a run, a multi-seed workdir, an FL baseline."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise RunError(f"--workdir={workdir}: no config.json there; give the folder of a "
                   "gas-jax split-learning run (python -m gas_jax.main ... --workdir=RUN)")
  with open(path) as f:
    d = json.load(f)
  d.pop("execution_plan", None)
  seeds = d.get("seeds") or ()
  if seeds:
    raise RunError(f"--workdir={workdir} holds a multi-seed run (config.seeds={list(seeds)}): "
                   f"attack one seed at a time, --workdir={os.path.join(workdir, 'seed<s>')} "
                   f"(e.g. {os.path.join(workdir, f'seed{seeds[0]}')})")
  algorithm = d.get("algorithm")
  if algorithm in NO_ACTIVATIONS:
    raise RunError(f"config.algorithm={algorithm} in {path}: an FL baseline sends whole "
                   "models, never activations, so there is nothing for a server to invert; "
                   "attack a split-learning run (gas, gas_nogen, minibatch_sfl, s2fl)")
  return ml_collections.ConfigDict(d)


def load_victim(workdir: str) -> Victim:
  """The client model of RUN's newest checkpoint (`Checkpoints.on_start`'s restore)."""
  config = read_config(workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  steps = [s for s in (os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []) if s.isdigit()]
  if not steps:
    raise RunError(f"{ckpt_dir}: no checkpoint, so no trained client model to attack; run "
                   "the training there first (it saves one every config.checkpoint_every "
                   "global iterations and at the end)")
  ctx = context_lib.build_context(config)
  runner = runners.make_runner([ctx])
  ckpt = checkpoint.Checkpointer(workdir, int(config.checkpoints_to_keep))
  try:
    restored = ckpt.restore_latest(runner.state_dict()["device"])
  finally:
    ckpt.close()
  if restored is None:
    raise RunError(f"{ckpt_dir}: no readable checkpoint to attack")
  step, device, host = restored
  runner.load_state_dict(dict(host["runner"], device=device))
  return Victim(config=config, ctx=ctx, client_params=runner.eval_params()[0],
                client_apply=ctx.model.client_apply, step=int(step))


def activations(client_apply: Callable, params, x: np.ndarray, chunk: int = CHUNK) -> jnp.ndarray:
  """h(params; x) in jitted chunks of `chunk` rows (the last one padded): [N, *act]."""
  fn = jax.jit(client_apply)
  n = len(x)
  size = min(chunk, n)
  out = []
  for i in range(0, n, size):
    part = np.asarray(x[i:i + size])
    pad = size - len(part)
    if pad:
      part = np.concatenate([part, np.zeros((pad,) + part.shape[1:], part.dtype)])
    out.append(fn(params, jnp.asarray(part))[:size - pad])
  return jnp.concatenate(out)


def train_decoder(z, x01, settings: AttackSettings, image_shape, log_every: int = 10):
  """A fresh decoder fitted to the pairs (z, x01) (MSE, Adam): (params, apply_fn, losses), the
  losses being the mean training MSE of each epoch."""
  _, init_fn, apply_fn = decoder_lib.make_decoder(z.shape[1:], image_shape, settings.blocks,
                                                  settings.channels)
  params = init_fn(jax.random.PRNGKey(settings.seed))
  tx = optax.adam(settings.lr)
  opt = tx.init(params)
  n = z.shape[0]
  batch = min(settings.batch_size, n)
  steps = n // batch
  order_rng = np.random.default_rng([settings.seed, 1])   # the epochs' permutations (host)

  def loss_fn(p, zb, xb):
    return jnp.mean((apply_fn(p, zb) - xb) ** 2)

  @jax.jit
  def epoch(p, o, order, z_all, x_all):
    def step(carry, idx):
      p, o = carry
      loss, g = jax.value_and_grad(loss_fn)(p, z_all[idx], x_all[idx])
      updates, o = tx.update(g, o, p)
      return (optax.apply_updates(p, updates), o), loss

    (p, o), losses = jax.lax.scan(step, (p, o), order)
    return p, o, jnp.mean(losses)

  losses = []
  for e in range(settings.epochs):
    order = order_rng.permutation(n)[:steps * batch].reshape(steps, batch).astype(np.int32)
    params, opt, loss = epoch(params, opt, order, z, x01)
    losses.append(float(loss))
    if log_every and ((e + 1) % log_every == 0 or e + 1 == settings.epochs):
      logging.info("attack: epoch %d/%d, decoder training MSE %.5f", e + 1, settings.epochs,
                   losses[-1])
  return params, apply_fn, losses


def scores(recon, target) -> Dict[str, float]:
  """MSE, PSNR, SSIM of each reconstruction: their means over the images and std's."""
  per = dict(mse=similarity.mse_per_image(recon, target),
             psnr=similarity.psnr_per_image(recon, target),
             ssim=similarity.ssim_per_image(recon, target))
  out = {}
  for k, v in per.items():
    v = np.asarray(v, np.float64)
    out[k], out[f"{k}_std"] = float(v.mean()), float(v.std())
  return out


def save_grid(path: str, originals: np.ndarray, recons: np.ndarray, title: str = "") -> None:
  """A PNG: the originals (top row) over their reconstructions (bottom row), written atomically."""
  import matplotlib  # noqa: PLC0415  (only the attack draws)
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # noqa: PLC0415
  k = len(originals)
  fig, axes = plt.subplots(2, k, figsize=(1.3 * k, 3.0), squeeze=False)
  gray = originals.shape[-1] == 1
  for j in range(k):
    for row, img in ((0, originals[j]), (1, recons[j])):
      ax = axes[row][j]
      ax.imshow(img[..., 0] if gray else img, cmap="gray" if gray else None, vmin=0.0, vmax=1.0,
                interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
  axes[0][0].set_ylabel("original")
  axes[1][0].set_ylabel("reconstruction")
  if title:
    fig.suptitle(title, fontsize=8)
  tmp = os.path.join(os.path.dirname(os.path.abspath(path)), ".tmp-" + os.path.basename(path))
  fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
  plt.close(fig)
  os.replace(tmp, path)


def _pick(n_available: int, n: int, what: str, flag: str, rng) -> np.ndarray:
  if n < 0 or n > n_available:
    raise RunError(f"{flag}={n}: the {what} has {n_available} images (0 < n <= {n_available}"
                   f"{'; 0 = all' if flag == '--aux' else ''})")
  return np.sort(rng.permutation(n_available)[:n or n_available])


def run_attack(workdir: str, settings: AttackSettings = AttackSettings(),
               victim: Optional[Victim] = None) -> Dict[str, Any]:
  """The whole attack on RUN: returns attack.json's content and writes it with the PNG,
  holding RUN's workdir lock throughout (one line if a training or another attack holds it)."""
  t0 = time.time()
  check_settings(settings)
  if victim is None:
    read_config(workdir)    # the refusals that need no data, before the lock is touched
  lock = workdir_lib.WorkdirLock(workdir, role="gas_jax.attack", hint=(
      "it is still training or being attacked; attack it once that process has finished"))
  with lock:
    return _attack(workdir, settings, victim or load_victim(workdir), t0)


def _attack(workdir: str, settings: AttackSettings, victim: Victim, t0: float) -> Dict[str, Any]:
  ds = victim.ctx.dataset
  lo, hi = images.image_range(ds)
  rng = np.random.default_rng(settings.seed)
  aux_idx = _pick(len(ds.x_test), settings.aux, "test split", "--aux", rng)
  target_idx = _pick(len(ds.x_train), settings.targets, "train split", "--targets", rng)
  apply = lambda x: activations(victim.client_apply, victim.client_params, x)
  z_aux, x_aux = apply(ds.x_test[aux_idx]), images.to_unit(ds.x_test[aux_idx], lo, hi)
  z_tgt, x_tgt = apply(ds.x_train[target_idx]), images.to_unit(ds.x_train[target_idx], lo, hi)
  logging.info("attack on %s (global iteration %d): %d auxiliary pairs, %d targets, "
               "activations %s, decoder %s", workdir, victim.step, len(aux_idx), len(target_idx),
               tuple(z_aux.shape[1:]), decoder_lib.decoder_name(settings.blocks,
                                                                settings.channels))
  params, apply_fn, losses = train_decoder(z_aux, x_aux, settings, ds.input_shape)
  recon = jax.jit(apply_fn)(params, z_tgt)
  guess = jnp.broadcast_to(jnp.mean(x_aux, axis=0), x_tgt.shape)
  config = victim.config
  result = dict(
      scores(recon, x_tgt),
      baseline=scores(guess, x_tgt),
      decoder_train_mse=losses[-1],
      global_iteration=victim.step,
      algorithm=config.algorithm, dataset=config.data.name, model=config.model.name,
      split=config.model.split, activation_shape=list(z_aux.shape[1:]),
      privacy_method=str(config.get("privacy", {}).get("method", "none")),
      settings=dict(dataclasses.asdict(settings), aux=len(aux_idx), aux_requested=settings.aux,
                    decoder=decoder_lib.decoder_name(settings.blocks, settings.channels),
                    optimizer="adam", loss="mse",
                    aux_source="test split", target_source="train split"),
      image_range=dict(lo=[float(v) for v in lo], hi=[float(v) for v in hi]),
      wall_time_s=time.time() - t0)
  metrics_lib.atomic_write(os.path.join(workdir, "attack.json"),
                           json.dumps(result, indent=2) + "\n")
  k = min(GRID, len(target_idx))
  save_grid(os.path.join(workdir, "reconstructions.png"), np.asarray(x_tgt[:k]),
            np.asarray(recon[:k]),
            f"{config.algorithm} {config.model.name}/{config.model.split}: SSIM "
            f"{result['ssim']:.3f}, PSNR {result['psnr']:.1f} dB")
  logging.info("attack: MSE %.4f, PSNR %.2f dB, SSIM %.4f (mean-image guess: MSE %.4f, "
               "PSNR %.2f, SSIM %.4f); wrote %s", result["mse"], result["psnr"], result["ssim"],
               result["baseline"]["mse"], result["baseline"]["psnr"], result["baseline"]["ssim"],
               os.path.join(workdir, "attack.json"))
  return result
