"""Host-side loops ("runners"): how an algorithm's pure jitted steps are driven over one global
iteration. A runner is registered with its algorithm name in `gas_jax.registry.ALGORITHMS` as a
factory `make(ctx: RunContext) -> Runner`; `make_runner(contexts)` picks it (or, for the runs
axis `config.seeds`, the seeds runner). The run loop (`gas_jax.loop`) drives any of them.

Adding an algorithm: one new module here with its runner and a registered factory, plus its
name in the import list below.
"""
from typing import Any, Dict, List, Protocol, Tuple

from gas_jax.context import RunContext
from gas_jax.registry import ALGORITHMS
from gas_jax.runners import fl_runner, gas_runner, seeds_runner, sfl_runner  # noqa: F401


class Runner(Protocol):
  """What the run loop needs from a runner (one seed)."""

  calls: Any
  """The jitted functions the runner calls (a frozen dataclass: benchmarks wrap its entries)."""

  def run_iteration(self) -> Dict:
    """Advances one global iteration (spec §1.8); returns its row fields: `server_updates`,
    `client_steps`, `simulated_time_s` and the training losses."""

  def eval_params(self) -> Tuple[Any, Any]:
    """The models to evaluate: (client params theta_glob, server params phi)."""

  def state_dict(self) -> Dict:
    """The whole resumable state: `device` (a pytree, checkpointed by orbax) and host values."""

  def load_state_dict(self, d: Dict) -> None:
    """Restores `state_dict()`'s output."""


def make_runner(contexts: List[RunContext], multi: bool = False):
  """The runner of one seed (`contexts[0]`), or with `multi` (`config.seeds`) the runs-axis
  runner over one context per seed (`seeds_runner.SeedsGasRunner`: `run_iteration()` returns the rows of
  the seeds that finished a global iteration, by lane)."""
  config = contexts[0].config
  if not multi:
    return ALGORITHMS.get(config.algorithm)(contexts[0])
  generate = config.algorithm == "gas" and bool(config.generate)
  return seeds_runner.SeedsGasRunner(contexts, generate, contexts[0].plan.vmap_seeds)
