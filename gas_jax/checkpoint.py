"""Checkpoints of the whole resumable state with orbax-checkpoint.

A checkpoint at global iteration t holds two items:
- "state": the runner's device pytree (client and server params, optimiser states incl. momentum
  buffers, activation and model buffers, per-label statistics and factors, counters), saved with
  orbax's StandardSave;
- "host": the host state as JSON (scheduler clocks / active set / weight counters / numpy RNG
  states, per-client data order, counters, and where metrics.jsonl stands).
RNG keys are not stored: every key is `fold_in(key(seed), counter)` of counters that are.

orbax writes each step into a temporary directory and renames it when complete, so a crash during
a save leaves the previous checkpoints intact; if the newest one is unreadable anyway (corrupted
on disk), `restore_latest` deletes it and falls back to the one before.
"""
import os
from typing import Any, Optional, Tuple

import numpy as np
import orbax.checkpoint as ocp
from absl import logging


def to_json(x: Any) -> Any:
  """numpy arrays / scalars inside dicts and lists -> JSON-safe values (tagged arrays)."""
  if isinstance(x, dict):
    return {str(k): to_json(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_json(v) for v in x]
  if isinstance(x, np.ndarray):
    return {"__ndarray__": x.tolist(), "dtype": str(x.dtype), "shape": list(x.shape)}
  if isinstance(x, np.generic):
    return x.item()
  return x


def from_json(x: Any) -> Any:
  if isinstance(x, dict):
    if "__ndarray__" in x:
      return np.asarray(x["__ndarray__"], dtype=x["dtype"]).reshape(x["shape"])
    return {k: from_json(v) for k, v in x.items()}
  if isinstance(x, list):
    return [from_json(v) for v in x]
  return x


class Checkpointer:
  """Saves/restores {"state": device pytree, "host": JSON dict} every few global iterations."""

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "host"))

  def save(self, step: int, device_state: Any, host_state: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(device_state), host=ocp.args.JsonSave(to_json(host_state))),
        force=True)
    self.manager.wait_until_finished()

  def all_steps(self):
    return sorted(self.manager.all_steps())

  def restore_latest(self, target: Any) -> Optional[Tuple[int, Any, dict]]:
    """(step, device_state, host_state) of the newest readable checkpoint, or None."""
    for step in reversed(self.all_steps()):
      try:
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), host=ocp.args.JsonRestore()))
        return step, out["state"], from_json(out["host"])
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("checkpoint at global iteration %d is unreadable (%s: %s); deleting "
                        "it and trying the one before", step, type(e).__name__, e)
        self.manager.delete(step)
    return None

  def close(self) -> None:
    self.manager.close()
