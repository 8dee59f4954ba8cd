"""What a run is built from: config -> dataset -> model -> partition -> clients -> time model.

`build_context(config)` builds everything a runner needs (no training, nothing written).
Randomness: every stream derives from `config.seed` alone - the partition, client capabilities,
scheduler draws and minibatch orders through numpy SeedSequences with distinct stream ids, the
model init and the device steps through `jax.random.fold_in` - so every algorithm sees the same
partition and client capabilities for a seed (spec §6.13), whatever order things are built in.
"""
import dataclasses
from typing import Any, Optional

import jax.numpy as jnp
import ml_collections

from gas_jax import config as config_lib
from gas_jax import execution
from gas_jax.data import clients as clients_lib
from gas_jax.data import partition as partition_lib
from gas_jax.data import sources
from gas_jax.data.clients import ClientData
from gas_jax.data.dataset import Dataset
from gas_jax.models.registry import get_model, with_precision
from gas_jax.system import availability, timing


@dataclasses.dataclass
class RunContext:
  config: Any
  dataset: Dataset
  model: Any             # models.registry.SplitModel
  clients: ClientData
  time_model: timing.TimeModel
  data: dict             # device-resident train set: x, y, log_prior [K, M]
  plan: execution.ExecutionPlan   # how the runner executes (cohorts, chunks, meshes, ...)
  system: Optional[availability.ClientSystem] = None   # who is online, dropout (issue #29)


def time_model(config, model, profiles) -> timing.TimeModel:
  """Time constants from the model itself, or REF's hard-coded AlexNet-L2 ones (spec §1.9)."""
  if config.time.ref_constants:
    const = dict(timing.REF_ALEXNET_L2)
  else:
    const = dict(client_flops=model.client_macs, activation_bits=model.activation_bits,
                 client_model_bits=model.client_model_bits,
                 full_flops=model.client_macs + model.server_macs,
                 full_model_bits=model.full_model_bits)
  return timing.TimeModel(profiles=profiles, batch_size=config.clients.batch_size, **const)


def radio(config) -> timing.Radio:
  """The uplink's constants from `time.*` (REF's by default); `time.uplink="shared"`: the
  paper's orthogonal access, a static W/C share per client (C = clients.participating)."""
  t = config.time
  return timing.Radio(
      bandwidth=t.get("bandwidth_hz", timing.BANDWIDTH_HZ),
      power=t.get("tx_power_w", timing.TX_POWER_W),
      noise_psd=t.get("noise_psd_w_per_hz", timing.NOISE_PSD_W_PER_HZ),
      path_loss_at_1km=t.get("path_loss_db_at_1km", timing.PATH_LOSS_DB_AT_1KM),
      path_loss_per_decade=t.get("path_loss_db_per_decade", timing.PATH_LOSS_DB_PER_DECADE),
      share=config.clients.participating if t.get("uplink", "full") == "shared" else 1)


def build_context(config: ml_collections.ConfigDict, like: Optional[RunContext] = None,
                  plan: Optional[execution.ExecutionPlan] = None) -> RunContext:
  """Everything a run needs, built from the config (no training, nothing written).

  `plan`: how to execute; default `ExecutionPlan.resolve(config)` for this machine (tests pass
  one to fix the execution whatever the backend).

  `like`: a context of the same dataset (another seed of the runs axis) whose loaded dataset
  and device-resident train set are shared instead of being loaded and uploaded again."""
  ds = like.dataset if like is not None else sources.load_dataset(config.data.name,
                                                                  config.data.dir or None)
  config_lib.validate_with_data(config, ds.num_classes, len(ds.y_train), len(ds.y_test))
  model = get_model(config.model.name, config.model.split, ds.num_classes, ds.input_shape)
  parts = partition_lib.partition(
      ds.y_train, config.clients.num, config.data.partition, num_classes=ds.num_classes,
      seed=config.seed, shards=config.data.shards, alpha=config.data.alpha,
      min_size=config.data.min_size)
  config_lib.validate_partition(config, [len(p) for p in parts])
  clients = clients_lib.ClientData(parts, ds.y_train, ds.num_classes,
                                   config.clients.batch_size, config.seed)
  profiles = timing.draw_profiles(
      config.clients.num, config.seed,
      compute_range=(config.time.compute_min, config.time.compute_max),
      distance_range=(config.time.distance_min_km, config.time.distance_max_km),
      placement=config.time.get("placement", "radius"), radio=radio(config))
  if config.get("system") is not None:
    profiles = availability.apply_speed(config, profiles)   # system.speed (uniform: REF)
  times = time_model(config, model, profiles)
  config_lib.validate_time_model(config, times)
  if like is not None:
    x, y = like.data["x"], like.data["y"]
  else:
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
  data = dict(x=x, y=y, log_prior=jnp.asarray(clients.logit_adjustment()))
  plan = plan or execution.ExecutionPlan.resolve(config, model=model)
  return RunContext(config=config, dataset=ds, model=with_precision(model, plan.precision),
                    clients=clients, time_model=times, data=data, plan=plan,
                    system=availability.from_config(config, times))
