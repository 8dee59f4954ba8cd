"""Fixed-speed time models for the hand-worked staleness schedules (not a test module).

`FixedTimes` answers the `TimeModel` calls the schedulers make with per-client constants, so a
schedule can be derived by hand; `start_gas` / `start_async` put chosen clients in the slots
(the replacement draw is forced when K = C + 1: one inactive client).
"""
import numpy as np


class FixedTimes:
  """compute(k) = flops[k], upload_activation(k) = act[k], upload_model(k) = model[k]; FL:
  local_training_full(k, E) + upload_full_model(k) = full[k] (all in simulated seconds)."""

  def __init__(self, act=(), flops=None, model=None, full=()):
    self.act = list(act)
    self.flops = list(flops) if flops is not None else [0.0] * len(self.act)
    self.model = list(model) if model is not None else [0.0] * len(self.act)
    self.full = list(full)

  def compute(self, k):
    return self.flops[k]

  def upload_activation(self, k):
    return self.act[k]

  def upload_model(self, k):
    return self.model[k]

  def local_training_full(self, k, local_iters):
    return self.full[k]

  def upload_full_model(self, k):
    return 0.0


def start_gas(sched, active) -> None:
  """The GAS scheduler starts with `active` in its slots (spec §1.2 step 7 clocks)."""
  sched.active = np.array(active, np.int64)
  sched.tau[:] = 0.0
  for k in active:
    sched.tau[k] = sched.tm.compute(k) + sched.tm.upload_activation(k)


def start_async(clock, active) -> None:
  """The FedBuff / CA2FL clock starts with `active` in its slots, dispatched at t = 0."""
  clock.active = np.array(active, np.int64)
  clock.tau[:] = 0.0
  for k in active:
    clock.tau[k] = clock.duration(k)
