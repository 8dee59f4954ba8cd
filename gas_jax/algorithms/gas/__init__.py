"""GAS: Generative Activation-aided Asynchronous Split FL (Yang & Liu, AAAI 2025), REF semantics.

`build` (`algorithm`) returns pure step functions over frozen states (`state`): the client side
(`client`: eq. 3, 6-10), the server update with generated activations (`server`, `generation`:
eq. 5, 11-12, Algorithm 1) and the host-side planning of server updates (`planning`).
"""
from gas_jax.algorithms.gas.algorithm import build
from gas_jax.algorithms.gas.generation import generated_row_sizes, generated_rows
from gas_jax.algorithms.gas.planning import (check_gen_rows, make_room, plan_from_host,
                                             plan_server_update, precompile_compress,
                                             run_server_update, server_sizes_to_precompile)
from gas_jax.algorithms.gas.server import DROPOUT_SALT
from gas_jax.algorithms.gas.state import (ActivationBuffer, Algorithm, ClientState, GasHParams,
                                          GasState, ServerState, buffer_size, gen_samples,
                                          gen_target, hparams_from_config)

__all__ = [
    "DROPOUT_SALT", "ActivationBuffer", "Algorithm", "ClientState", "GasHParams", "GasState",
    "ServerState", "buffer_size", "build", "check_gen_rows", "gen_samples", "gen_target", "generated_row_sizes", "generated_rows",
    "hparams_from_config", "make_room", "plan_from_host", "plan_server_update",
    "precompile_compress", "run_server_update", "server_sizes_to_precompile",
]
