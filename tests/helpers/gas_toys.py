"""Tiny hand-made GAS run contexts (not a test module): a real `GasRunner` over a toy train set.

cnn_small on 4x4x1 inputs (activation 2x2x64, D = 256, so that covariance work stays small), M = 3
classes, K clients with the given sample counts and skewed label mixes (non-zero log-priors),
REF time constants.
"""
import types

import jax.numpy as jnp
import numpy as np

import gas_jax.models  # noqa: F401
from configs import digits
from gas_jax.data.clients import ClientData
from gas_jax.models.registry import get_model
from gas_jax.context import RunContext
from gas_jax.execution import ExecutionPlan
from gas_jax.system import timing

M = 3
SHAPE = (4, 4, 1)
SIZES = (6, 5, 9, 7)
COMPUTE = np.array([1e9, 2e9, 4e9, 5e9])
DISTANCE = np.array([0.1, 0.5, 1.0, 0.3])

_MODEL = {}


def model():
  if "m" not in _MODEL:
    _MODEL["m"] = get_model("cnn_small", "default", M, SHAPE)
  return _MODEL["m"]


def config(algorithm="gas", num=4, participating=2, local_iters=2, batch_size=4, seed=0, **kw):
  """The digits config shrunk to the toy; kw: dotted fields as "a__b" (e.g. stats__method)."""
  c = digits.get_config()
  c.algorithm, c.seed = algorithm, seed
  c.clients.num, c.clients.participating = num, participating
  c.clients.local_iters, c.clients.batch_size = local_iters, batch_size
  c.time.ref_constants = True
  c.execution.cohort_size = 1
  # Chunks larger than the server batch: one pass, and one packed size of generated rows
  # (`gas.generated_row_sizes`), so the server update compiles once.
  c.execution.server_chunk = 1024
  c.log_every_s = 1e9
  for key, value in kw.items():
    node = c
    parts = key.split("__")
    for p in parts[:-1]:
      node = node[p]
    node[parts[-1]] = value
  return c


def parts_and_labels(sizes=SIZES, seed=0):
  """Client k holds sizes[k] samples, label k % M for about half of them, the rest cycling."""
  labels, parts, start = [], [], 0
  for k, s in enumerate(sizes):
    lab = np.where(np.arange(s) % 2 == 0, k % M, np.arange(s) % M)
    labels.append(lab)
    parts.append(np.arange(start, start + s))
    start += s
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(start,) + SHAPE).astype(np.float32)
  return parts, np.concatenate(labels).astype(np.int32), x


def context(cfg, sizes=SIZES, seed=0, plan=None) -> RunContext:
  """A toy context; `plan`: the execution plan (default: the CPU one for `cfg.execution`)."""
  parts, y, x = parts_and_labels(sizes, seed)
  clients = ClientData(parts, y, M, cfg.clients.batch_size, cfg.seed)
  k = len(sizes)
  profiles = timing.ClientProfiles(compute=COMPUTE[:k].copy(), distance=DISTANCE[:k].copy())
  tm = timing.TimeModel(profiles=profiles, batch_size=cfg.clients.batch_size,
                        **timing.REF_ALEXNET_L2)
  data = dict(x=jnp.asarray(x), y=jnp.asarray(y),
              log_prior=jnp.asarray(clients.logit_adjustment()))
  return RunContext(config=cfg, dataset=types.SimpleNamespace(num_classes=M), model=model(),
                    clients=clients, time_model=tm, data=data,
                    plan=plan or ExecutionPlan.resolve(cfg, backend="cpu", device_count=1))
