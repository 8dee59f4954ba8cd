"""`runner.calls`: the jitted functions a runner calls, as one public, replaceable record.

A runner calls its jitted steps only through `self.calls.<name>(...)`, so whoever holds a
runner (a benchmark, a test) can instrument them without reaching into the runner:

    runner.calls = dataclasses.replace(runner.calls, cohort=Timed(runner.calls.cohort))
    runner.calls = runner.calls.wrap(Timed)          # every entry that is set

The records are frozen: instrumenting replaces the whole record, and undoing it is putting the
old record back. Replace entries after the runner is built: its constructor compiles ahead of
time through the jitted functions' `.lower` (a wrapper that forwards attribute access, as
`benchmarks.common.Timed` does, keeps that working for later `precompile_server` calls).

- `GasCalls` (`GasRunner`, `SeedsGasRunner`): client, cohort, server, compress.
- `FLCalls` (FedAvg, FedBuff, CA2FL): step, init_opt.
- `SFLCalls` (MiniBatch-SFL, S2FL): client, server, init_opt.
The aggregation rules (FedAvg's average, the buffers' flushes) are module-level jitted
functions of `fl_runner` and `sfl_runner`, not per-runner calls.
"""
import dataclasses
from typing import Callable, Optional, Tuple


class Calls:
  """What every record offers: the names of its entries that are set, and `wrap`."""

  def names(self) -> Tuple[str, ...]:
    """The entries that are set (an entry a runner does not use is None)."""
    return tuple(f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None)

  def wrap(self, fn: Callable[[Callable], Callable]):
    """A copy with every set entry e replaced by fn(e) (e.g. `benchmarks.common.Timed`)."""
    return dataclasses.replace(self, **{n: fn(getattr(self, n)) for n in self.names()})


@dataclasses.dataclass(frozen=True)
class GasCalls(Calls):
  """GAS's jitted calls (`gas_jax.engine`), in `GasRunner` with these signatures:

  client: (client_state, buffer, phi, data, event, step_key) -> (client_state, buffer, out),
    one event (`engine.make_client_runner`).
  cohort: the same over a padded cohort of events [L] (`engine.make_cohort_runner`).
  server: (server_state, buffer, global_iter, server_key, gen_rows=, room_made=) ->
    (server_state, metrics), one server update (`engine.make_server_runner`).
  compress: (server_state, label) -> server_state, one label's factor compression.

  In `SeedsGasRunner` every state, event and key has a leading seed axis when vmapped (client
  also takes `active` [S], server `due` [S] before its keywords, compress is (servers, seed,
  label): `seeds_steps`), and cohort is None in its host loop over seeds (`vmapped=False`),
  where the calls are the single-run ones above, called once per seed.
  """
  client: Callable
  cohort: Optional[Callable]
  server: Callable
  compress: Callable


@dataclasses.dataclass(frozen=True)
class FLCalls(Calls):
  """The FL baselines' jitted calls (`fl_runner.compiled_step`, shared by runners of equal
  model, hyperparameters and augmentation).

  step: (params, opt, data, idx, mask, global_iter, key, aug_key, step_id) ->
    (params, opt, out), one local SGD step.
  init_opt: params -> a fresh optimiser state (per-client momentum).
  """
  step: Callable
  init_opt: Callable


@dataclasses.dataclass(frozen=True)
class SFLCalls(Calls):
  """The synchronous SFL baselines' jitted calls (`sfl_runner.compiled_steps`).

  client: (theta, opt, phi, data, idx, mask, global_iter, key, aug_key, step_id, dec=None) ->
    (theta, opt, out), one client step (out["act"]: its activations; privacy "inversion": dec
    is the client's decoder copy and Adam state, out["dec"] the same after its step).
  server: (phi, opt, data, acts, idx, mask, global_iter, key, step_id) -> (phi, opt, out),
    one server step on the concatenated activations.
  init_opt: params -> a fresh optimiser state (per-client momentum).
  """
  client: Callable
  server: Callable
  init_opt: Callable
