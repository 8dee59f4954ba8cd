"""Tiny hand-made run contexts for the baseline tests (not a test module)."""
import jax.numpy as jnp
import numpy as np

import gas_jax.models  # noqa: F401
from configs import digits
from gas_jax.data.clients import ClientData
from gas_jax.models.registry import get_model
from gas_jax.context import RunContext
from gas_jax.execution import ExecutionPlan
from gas_jax.system import timing

M = 3                     # classes
SHAPE = (8, 8, 1)
COMPUTE = np.array([1e9, 2e9, 4e9, 5e9])
DISTANCE = np.array([0.1, 0.5, 1.0, 0.3])

_MODEL = {}


def model():
  if "m" not in _MODEL:
    _MODEL["m"] = get_model("cnn_small", "default", M, SHAPE)
  return _MODEL["m"]


def config(algorithm: str, num=4, participating=2, local_iters=2, batch_size=4, seed=0, **kw):
  c = digits.get_config()
  c.algorithm, c.seed = algorithm, seed
  c.clients.num, c.clients.participating = num, participating
  c.clients.local_iters, c.clients.batch_size = local_iters, batch_size
  c.time.ref_constants = True
  for key, value in kw.items():
    node = c
    parts = key.split("__")
    for p in parts[:-1]:
      node = node[p]
    node[parts[-1]] = value
  return c


def context(cfg, sizes=(6, 5, 9, 7), seed=0, plan=None) -> RunContext:
  """K clients with the given sample counts (labels cycling), REF time constants, toy profiles;
  `plan`: the execution plan (default: the CPU one for `cfg.execution`)."""
  rng = np.random.default_rng(seed)
  n = int(sum(sizes))
  x = rng.normal(size=(n,) + SHAPE).astype(np.float32)
  y = (np.arange(n) % M).astype(np.int32)
  parts, start = [], 0
  for s in sizes:
    parts.append(np.arange(start, start + s))
    start += s
  clients = ClientData(parts, y, M, cfg.clients.batch_size, cfg.seed)
  k = len(sizes)
  profiles = timing.ClientProfiles(compute=COMPUTE[:k].copy(), distance=DISTANCE[:k].copy())
  tm = timing.TimeModel(profiles=profiles, batch_size=cfg.clients.batch_size,
                        **timing.REF_ALEXNET_L2)
  data = dict(x=jnp.asarray(x), y=jnp.asarray(y),
              log_prior=jnp.asarray(clients.logit_adjustment()))
  return RunContext(config=cfg, dataset=None, model=model(), clients=clients, time_model=tm,
                    data=data,
                    plan=plan or ExecutionPlan.resolve(cfg, backend="cpu", device_count=1))


def rate(distance_km):
  """Spec §1.9 Shannon rate, computed independently of gas_jax.system.timing."""
  pl = 128.1 + 37.6 * np.log10(np.asarray(distance_km, np.float64))
  return 1e7 * np.log2(1.0 + 0.2 * 10.0 ** (-pl / 10.0) / (1e7 * 3.981e-21))
