"""Checkpoints of the whole resumable state with orbax-checkpoint.

A checkpoint at global iteration t holds two items:
- "state": the runner's device pytree (client and server params, optimiser states incl. momentum
  buffers, activation and model buffers, per-label statistics and factors, counters), saved with
  orbax's StandardSave;
- "host": the host state as JSON (scheduler clocks / active set / weight counters / numpy RNG
  states, per-client data order, counters, and where metrics.jsonl stands).
RNG keys are not stored: every key is `fold_in(key(seed), counter)` of counters that are.

orbax writes each step into a temporary directory and renames it when complete, so a crash during
a save leaves the previous checkpoints intact. `restore_latest` never deletes a checkpoint:
- one whose arrays do not match the run's state (names or shapes: another config or code) stops
  the run with a `RunError` naming the first difference, and is left as it is;
- one that is unreadable (corrupted on disk) is moved aside to WORKDIR/checkpoints.unreadable/
  and the one before is tried.
"""
import os
import time
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from gas_jax.config import RunError


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

  def has_step(self, step: int) -> bool:
    return step in self.all_steps()

  def restore_latest(self, target: Any) -> Optional[Tuple[int, Any, dict]]:
    """(step, device_state, host_state) of the newest readable checkpoint, or None.

    Raises RunError if a checkpoint does not fit `target` (nothing is changed on disk); an
    unreadable one is moved aside and the one before is tried."""
    moved = []
    for step in reversed(self.all_steps()):
      try:
        stored = _array_shapes(ocp.StandardCheckpointHandler().metadata(
            epath.Path(self.directory) / str(step) / "state"))
      except Exception as e:  # pylint: disable=broad-except
        moved.append(self._move_aside(step, f"its metadata is unreadable "
                                            f"({type(e).__name__}: {e})"))
        continue
      diff = _first_difference(stored, _array_shapes(target))
      if diff:
        raise RunError(f"the checkpoint {self.directory}/{step} does not fit this run ({diff}): "
                       "it was written by another config or version of gas-jax; nothing was "
                       "changed: use a new --workdir, or --overwrite to move the old run aside")
      try:
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), host=ocp.args.JsonRestore()))
        return step, out["state"], from_json(out["host"])
      except Exception as e:  # pylint: disable=broad-except
        moved.append(self._move_aside(step, f"{type(e).__name__}: {e}"))
    if moved:   # never start over silently: the run's files would be overwritten
      raise RunError(f"no checkpoint in {self.directory} could be read (moved to "
                     f"{os.path.dirname(moved[0])}); the run's files are kept: see the warnings "
                     "above, then use a new --workdir, or --overwrite to start over")
    return None

  def _move_aside(self, step: int, why: str) -> str:
    """Moves an unreadable step to WORKDIR/checkpoints.unreadable/ (process 0 of a
    multi-process run; the others wait for it) and returns where."""
    aside = os.path.join(os.path.dirname(self.directory), "checkpoints.unreadable")
    dest = os.path.join(aside, f"{step}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    if jax.process_index() == 0:
      os.makedirs(aside, exist_ok=True)
      os.rename(os.path.join(self.directory, str(step)), dest)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # noqa: PLC0415
      multihost_utils.sync_global_devices(f"checkpoint_moved_aside_{step}")
    self.manager.reload()
    logging.warning("the checkpoint at global iteration %d is unreadable (%s); moved it to %s "
                    "and trying the one before", step, why.splitlines()[0][:300], dest)
    return dest

  def close(self) -> None:
    self.manager.close()


def _array_shapes(tree) -> Dict[str, Tuple[int, ...]]:
  """'a.b.0.c' -> shape of every array leaf (a state pytree or orbax's tree metadata)."""
  tree = getattr(tree, "tree", tree)
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    parts = []
    for k in path:
      for attr in ("key", "idx", "name"):
        if hasattr(k, attr):
          parts.append(str(getattr(k, attr)))
          break
      else:
        parts.append(str(k))
    out[".".join(parts)] = tuple(getattr(leaf, "shape", ()) or ())
  return out


def _first_difference(stored: Dict[str, tuple], wanted: Dict[str, tuple]) -> Optional[str]:
  """A short description of how two name -> shape maps differ, or None if they hold the same
  shapes (compared as multisets: containers may be named differently in orbax's metadata)."""
  if sorted(map(tuple, stored.values())) == sorted(map(tuple, wanted.values())):
    return None
  for name in sorted(set(stored) & set(wanted)):
    if tuple(stored[name]) != tuple(wanted[name]):
      return f"{name} has shape {tuple(stored[name])} there and {tuple(wanted[name])} here"
  missing = sorted(set(wanted) - set(stored))
  extra = sorted(set(stored) - set(wanted))
  what = [f"{len(stored)} arrays there, {len(wanted)} here"]
  if missing:
    what.append(f"e.g. {missing[0]} is not there")
  if extra:
    what.append(f"e.g. {extra[0]} is not here")
  return ", ".join(what)
