"""Host-side loops ("runners"): how an algorithm's pure jitted steps are driven over one global
iteration. A runner is registered with its algorithm name in `gas_jax.registry.ALGORITHMS` as a
factory `make(ctx: RunContext) -> Runner`. Every runner offers:

- `run_iteration() -> dict`: advance one global iteration (spec §1.8) and return its row fields
  (`server_updates`, `client_steps`, `simulated_time_s` and the training losses);
- `eval_params() -> (client_params, server_params)`: the models to evaluate (theta_glob, phi);
- `state_dict()` / `load_state_dict(d)`: the whole resumable state (device pytrees + host state).
"""
import dataclasses
from typing import Any

import numpy as np

from gas_jax.data.clients import ClientData
from gas_jax.data.sources import Dataset
from gas_jax.system.timing import TimeModel


@dataclasses.dataclass
class RunContext:
  config: Any
  dataset: Dataset
  model: Any             # models.registry.SplitModel
  clients: ClientData
  time_model: TimeModel
  data: dict             # device-resident train set: x, y, log_prior [K, M]


def finite_check(iteration: int, **values) -> None:
  """Divergence guard: raises naming the global iteration and every non-finite quantity
  (values are numbers, or booleans that say "finite")."""
  def ok(v):
    v = np.asarray(v)
    return bool(np.all(v)) if v.dtype == bool else bool(np.all(np.isfinite(v.astype(float))))
  bad = [name.replace("_", " ") for name, v in values.items() if not ok(v)]
  if bad:
    raise FloatingPointError(f"non-finite {', '.join(bad)} at global iteration {iteration}")


from gas_jax.runners import gas_runner  # noqa: E402,F401  (registers gas, gas_nogen)
from gas_jax.runners import fl_runner, sfl_runner  # noqa: E402,F401
