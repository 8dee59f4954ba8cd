"""The experiment driver: config -> data -> partition -> clients -> scheduler -> device steps.

`train_and_evaluate(config, workdir)` validates the config, builds everything from it, replays
the asynchronous arrival order on the host (`system.scheduler`), runs each global iteration's
events on the device in fixed-length scanned chunks (`engine`), evaluates after every global
iteration and writes config.json / metrics.jsonl / summary.json (`metrics`).

Randomness: every stream derives from `config.seed` alone - the partition, client capabilities,
scheduler draws and minibatch orders through numpy SeedSequences with distinct stream ids, the
model init and the device steps through `jax.random.fold_in` - so every algorithm sees the same
partition and client capabilities for a seed (spec §6.13), whatever order things are built in.
"""
import math
import time
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from gas_jax import config as config_lib
from gas_jax import engine, metrics as metrics_lib
from gas_jax.data import clients as clients_lib
from gas_jax.data import partition as partition_lib
from gas_jax.data import sources
from gas_jax.models.registry import get_model
from gas_jax.registry import ALGORITHMS
from gas_jax.system import scheduler as scheduler_lib
from gas_jax.system import timing


def weight_tag(config, ev: scheduler_lib.Event) -> float:
  """s(n) of an activation (spec §1.6): REF counter, or the paper's functions of n = U + 1."""
  fn, a, b = config.weighting.fn, config.weighting.a, config.weighting.b
  n = ev.progress + 1
  if fn == "ref":
    return float(ev.counter_tag)
  if fn == "linear":
    return float(n)
  if fn == "exp":
    return float(a * math.exp(b * n))
  return float(a * n ** b)   # "poly"


def time_model(config, model, profiles) -> timing.TimeModel:
  if config.time.ref_constants:
    const = dict(timing.REF_ALEXNET_L2)
  else:
    const = dict(client_flops=model.client_macs, activation_bits=model.activation_bits,
                 client_model_bits=model.client_model_bits,
                 full_flops=model.client_macs + model.server_macs,
                 full_model_bits=model.full_model_bits)
  return timing.TimeModel(profiles=profiles, batch_size=config.clients.batch_size, **const)


def evaluate(algo, state, x_test, y_test, batch_size: int) -> Dict[str, float]:
  """Accuracy and mean CE over the whole test set, in fixed-size padded batches."""
  n = x_test.shape[0]
  bs = min(batch_size, n)
  total = -(-n // bs) * bs
  pad = total - n
  xs = np.concatenate([x_test, np.zeros((pad,) + x_test.shape[1:], x_test.dtype)])
  ys = np.concatenate([y_test, np.zeros((pad,), y_test.dtype)])
  mask = np.arange(total) < n
  correct, nll = _eval_batches(algo, state, xs.reshape((-1, bs) + x_test.shape[1:]),
                               ys.reshape(-1, bs), mask.reshape(-1, bs))
  return dict(test_accuracy=float(correct) / n, test_loss=float(nll) / n)


def _eval_batches(algo, state, xs, ys, ms):
  fn = _EVAL_CACHE.get(id(algo))
  if fn is None:
    @jax.jit
    def fn(state, xs, ys, ms):
      def body(carry, b):
        c, l = algo.evaluate(state, *b)
        return (carry[0] + c, carry[1] + l), None
      return jax.lax.scan(body, (0.0, 0.0), (xs, ys, ms))[0]
    _EVAL_CACHE[id(algo)] = fn
  return fn(state, xs, ys, ms)


_EVAL_CACHE = {}


def algo_state(cstate, sstate, buffer):
  from gas_jax.algorithms.gas import GasState
  return GasState(client=cstate, server=sstate, buffer=buffer)


def _check_finite(iteration, client_loss, client_finite, server_loss, server_finite, test_loss):
  """Divergence guard: names the global iteration and the quantity that is not finite."""
  bad = []
  if not np.all(np.isfinite(client_loss)):
    bad.append("client loss")
  if not client_finite:
    bad.append("client gradient")
  if not np.all(np.isfinite(server_loss)):
    bad.append("server loss")
  if not server_finite:
    bad.append("server gradient")
  if not math.isfinite(test_loss):
    bad.append("test loss")
  if bad:
    raise FloatingPointError(f"non-finite {', '.join(bad)} at global iteration {iteration}")


def build_run(config: ml_collections.ConfigDict):
  """Everything a run needs, built from the config (no training, nothing written)."""
  ds = sources.load_dataset(config.data.name, config.data.dir or None)
  config_lib.validate_with_data(config, ds.num_classes, len(ds.y_train))
  model = get_model(config.model.name, config.model.split, ds.num_classes, ds.input_shape)
  parts = partition_lib.partition(
      ds.y_train, config.clients.num, config.data.partition, num_classes=ds.num_classes,
      seed=config.seed, shards=config.data.shards, alpha=config.data.alpha,
      min_size=config.data.min_size)
  clients = clients_lib.ClientData(parts, ds.y_train, ds.num_classes,
                                   config.clients.batch_size, config.seed)
  profiles = timing.draw_profiles(
      config.clients.num, config.seed,
      compute_range=(config.time.compute_min, config.time.compute_max),
      distance_range=(config.time.distance_min_km, config.time.distance_max_km))
  tm = time_model(config, model, profiles)
  sched = scheduler_lib.GasScheduler(tm, config.clients.num, config.clients.participating,
                                     config.clients.local_iters, config.seed)
  algo = ALGORITHMS.get(config.algorithm)(model, config, ds.num_classes)
  return ds, model, clients, sched, algo


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict:
  """Runs one experiment and writes its outputs to `workdir`; returns the summary."""
  config_lib.validate(config, workdir)
  ds, model, clients, sched, algo = build_run(config)
  key = jax.random.key(config.seed)
  state = algo.init(jax.random.fold_in(key, 0))
  step_key = jax.random.fold_in(key, 1)
  data = dict(x=jnp.asarray(ds.x_train), y=jnp.asarray(ds.y_train),
              log_prior=jnp.asarray(clients.logit_adjustment()))
  crun = engine.make_client_runner(algo)
  srun = engine.make_server_runner(algo)
  server_key = jax.random.fold_in(key, 2)
  writer = metrics_lib.MetricsWriter(workdir)
  writer.write_config(config.to_dict())
  logging.info("model %s/%s: activation %s, client %d params, server %d params",
               model.name, model.split, model.activation_shape, model.client_params,
               model.server_params)
  agg_w = (np.ones(clients.num_clients) if config.clients.aggregation == "uniform"
           else clients.sizes.astype(np.float64))
  progress = metrics_lib.Progress(config.num_global_iters, config.log_every_s)
  start = time.time()
  client_steps = 0
  iter_walls = []
  cstate, sstate, buffer = state.client, state.server, state.buffer
  for _ in range(config.num_global_iters):
    t0 = time.time()
    iteration = sched.global_iters
    events = sched.next_iteration()
    client_out, server_out = [], []
    for seg in engine.segments(events):
      for ev in seg:
        idx, mask = clients.next_batch(ev.client)
        arrays = engine.event_arrays(ev, idx, mask, weight_tag(config, ev), agg_w[ev.client],
                                     client_steps)
        cstate, buffer, outs = crun(cstate, buffer, sstate.server, data, arrays, step_key)
        client_out.append(outs)
        client_steps += 1
      if seg[-1].server_update:
        sstate, sm = srun(sstate, buffer, np.int32(iteration), server_key)
        server_out.append(sm)
    client_out, server_out = jax.device_get((client_out, server_out))
    client_loss = np.array([o["client_loss"] for o in client_out])
    client_finite = all(bool(o["grad_finite"]) for o in client_out)
    server_loss = np.array([o["server_loss"] for o in server_out])
    server_finite = all(bool(o["grad_finite"]) for o in server_out)
    generated = np.array([o["generated"] for o in server_out])
    ev_ = evaluate(algo, algo_state(cstate, sstate, buffer), ds.x_test, ds.y_test,
                   config.eval_batch_size)
    _check_finite(sched.global_iters, client_loss, client_finite, server_loss, server_finite,
                  ev_["test_loss"])
    iter_walls.append(time.time() - t0)
    row = dict(global_iteration=sched.global_iters, server_updates=sched.server_updates,
               client_steps=client_steps, simulated_time_s=events[-1].iteration_time,
               wall_time_s=time.time() - start, **ev_,
               client_loss=float(np.mean(client_loss)),
               server_loss=float(np.mean(server_loss)) if len(server_loss) else None,
               generated_per_update=float(np.mean(generated)) if len(generated) else 0.0)
    writer.append(row)
    progress.update(row)
  progress.update(writer.rows[-1], force=True)
  steady = iter_walls[1:] or iter_walls
  return writer.write_summary(dict(
      mean_iter_wall_s=float(np.mean(steady)),
      first_iter_wall_s=float(iter_walls[0]),
      seed=config.seed, algorithm=config.algorithm, generate=bool(config.generate)))
