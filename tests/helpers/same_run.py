"""Comparing two finished runs' metrics.jsonl and final parameters (equivalence tests)."""
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from helpers.cli_runs import ROOT  # noqa: F401  (the repository root)
from gas_jax import staleness

T = 3


def columns(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return rows


def params(workdir):
  """Model parameters of the newest checkpoint: theta_glob, the in-flight slots, phi."""
  steps = [int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()]
  path = os.path.join(workdir, "checkpoints", str(max(steps)), "state")
  ckptr = ocp.StandardCheckpointer()
  meta = ckptr.metadata(path).item_metadata
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])   # saved on any number of devices
  tree = ckptr.restore(path, jax.tree_util.tree_map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), meta))
  return jax.tree_util.tree_leaves((tree["client"]["global_client"], tree["client"]["slots"],
                                    tree["server"]["server"]))


def assert_same_run(a, b, rtol=1e-5):
  ra, rb = columns(a), columns(b)
  assert [r["test_accuracy"] for r in ra] == [r["test_accuracy"] for r in rb]
  for key in ("test_loss", "client_loss", "server_loss"):
    np.testing.assert_allclose([r[key] for r in ra], [r[key] for r in rb], rtol=1e-5)
  for key in ("server_updates", "client_steps", "simulated_time_s", "generated_per_update",
              *staleness.COLUMNS):
    assert [r.get(key) for r in ra] == [r.get(key) for r in rb], key
  for x, y in zip(params(a), params(b)):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.dtype.kind == "f":
      # relative difference of each parameter tensor (norm-wise) within rtol (1e-5)
      assert np.linalg.norm(x - y) <= rtol * max(np.linalg.norm(y), 1e-30), (
          np.linalg.norm(x - y) / np.linalg.norm(y))
    else:
      np.testing.assert_array_equal(x, y)
