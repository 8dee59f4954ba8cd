"""Validation of a whole config before anything runs (one place, every field).

Each failure raises `ConfigError` naming the field, the value and what is allowed. `validate` runs
before any data is loaded; `validate_with_data` checks what needs the dataset's class count.
"""
import math
import os

import ml_collections
import numpy as np

from gas_jax import placement
from gas_jax.errors import ConfigError, RunError  # noqa: F401  (config_lib.RunError)
from gas_jax.registry import ALGORITHMS, DATASETS, MODELS
from gas_jax.system.timing import PLACEMENTS
from gas_jax.variants import VARIANTS


def _fail(field, value, allowed):
  raise ConfigError(f"{field}={value!r} is invalid: {allowed}")


def _get(config, field):
  node = config
  for part in field.split("."):
    if part not in node:
      raise ConfigError(f"{field} is missing from the config")
    node = node[part]
  return node


def _positive_int(config, field):
  v = _get(config, field)
  if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
    _fail(field, v, "must be an integer > 0")


def _number(v) -> bool:
  return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _positive(config, field):
  v = _get(config, field)
  if not _number(v) or not v > 0:
    _fail(field, v, "must be a finite number > 0")


def _non_negative(config, field):
  v = _get(config, field)
  if not _number(v) or not v >= 0:
    _fail(field, v, "must be a finite number >= 0")


def _at_most(config, field, bound, why):
  v = _get(config, field)
  if v > bound:
    _fail(field, v, f"must be <= {bound:g} ({why})")


def _choice(config, field, allowed):
  v = _get(config, field)
  if v not in allowed:
    _fail(field, v, f"allowed: {', '.join(map(str, allowed))}")


def _check_seeds(config) -> None:
  """config.seeds: the runs axis (`gas_jax.runners.seeds_runner`), GAS only, distinct integers >= 0."""
  seeds = tuple(config.get("seeds", ()) or ())
  if not seeds:
    return
  if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
    _fail("seeds", seeds, "must be integers >= 0, e.g. --config.seeds=0,1,2")
  if len(set(seeds)) != len(seeds):
    _fail("seeds", seeds, "must be distinct")
  if config.algorithm not in ("gas", "gas_nogen"):
    _fail("seeds", seeds, f"vmapped seeds are implemented for gas and gas_nogen, not "
          f"algorithm={config.algorithm!r}; run one seed per process (launch/compare.py)")
  if config.grad_dissimilarity.enabled:
    _fail("seeds", seeds, "cannot be combined with grad_dissimilarity.enabled=True")


def validate(config: ml_collections.ConfigDict, workdir: str = None) -> None:
  """Checks every field that can be checked without the data."""
  from gas_jax.models.registry import check_split  # noqa: PLC0415

  if isinstance(config.seed, bool) or not isinstance(config.seed, int) or config.seed < 0:
    _fail("seed", config.seed, "must be an integer >= 0")
  _choice(config, "algorithm", ALGORITHMS.names())
  _choice(config, "variant", VARIANTS)
  _check_seeds(config)
  _choice(config, "generate", (True, False))
  _positive_int(config, "num_global_iters")
  _choice(config, "data.name", DATASETS.names())
  _choice(config, "data.partition", ("iid", "shard", "dirichlet"))
  _positive_int(config, "data.shards")
  _positive(config, "data.alpha")
  _positive_int(config, "data.min_size")
  _choice(config, "data.augment", (True, False))
  for f in ("clients.num", "clients.participating", "clients.local_iters", "clients.batch_size"):
    _positive_int(config, f)
  if config.clients.participating > config.clients.num:
    _fail("clients.participating", config.clients.participating,
          f"must be <= clients.num ({config.clients.num})")
  _choice(config, "clients.momentum", ("shared", "per_client"))
  _choice(config, "clients.aggregation", ("uniform", "data_size"))
  for f in ("clients.activation_buffer", "clients.model_buffer"):
    _count(config, f, "0 (= clients.participating, REF) or N >= 1")
  _non_negative(config, "clients.la_tau")
  _choice(config, "optimizer.name", ("sgd", "adam"))
  _positive(config, "optimizer.lr")
  _non_negative(config, "optimizer.momentum")
  _non_negative(config, "optimizer.weight_decay")
  _non_negative(config, "optimizer.clip_norm")
  _choice(config, "optimizer.decay", ("none", "sqrt"))
  _choice(config, "model.name", MODELS.names())
  try:
    check_split(config.model.name, config.model.split, MODELS.get(config.model.name).splits)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  _choice(config, "model.server_bn_client_steps", (True, False))
  _choice(config, "weighting.fn", ("ref", "linear", "exp", "poly"))
  _positive(config, "weighting.a")
  _non_negative(config, "weighting.b")
  _at_most(config, "weighting.b", 1e4, "s(n) is used relative to the newest tag and rows more "
           "than 69 nats below it are dropped, so a larger b only keeps the newest activations")
  _choice(config, "stats.method", ("sqrt", "cholesky"))
  _choice(config, "stats.covariance", ("full", "diag", "lowrank"))
  _choice(config, "stats.diag_rule", ("ref", "topup"))
  _positive_int(config, "stats.rank")
  _positive_int(config, "stats.refresh_every")
  if config.stats.covariance == "lowrank" and config.stats.method != "sqrt":
    _fail("stats.covariance", "lowrank", "needs stats.method='sqrt' (a truncated square-root "
          "factor)")
  if config.stats.refresh_every > 1 and config.stats.method != "cholesky":
    _fail("stats.refresh_every", config.stats.refresh_every,
          "> 1 only applies to stats.method='cholesky' (the square-root factor needs no refresh)")
  _non_negative(config, "stats.jitter")
  _positive_int(config, "stats.block")
  _count(config, "stats.gen_rows", "0 (= clients.batch_size, REF) or N >= 1 rows per label")
  _choice(config, "stats.gen_balance", ("topup", "equal"))
  _positive(config, "time.compute_min")
  _positive(config, "time.compute_max")
  if config.time.compute_max < config.time.compute_min:
    _fail("time.compute_max", config.time.compute_max, "must be >= time.compute_min")
  _positive(config, "time.distance_min_km")
  _positive(config, "time.distance_max_km")
  if config.time.distance_max_km < config.time.distance_min_km:
    _fail("time.distance_max_km", config.time.distance_max_km, "must be >= time.distance_min_km")
  _validate_radio(config)
  if not isinstance(config.execution.cohort_size, int) or config.execution.cohort_size < -1:
    _fail("execution.cohort_size", config.execution.cohort_size,
          "-1 (auto), 0 (unbounded), 1 (event by event) or N > 1")
  _choice(config, "execution.vmap_seeds", (-1, 0, 1))
  if not isinstance(config.execution.server_chunk, int) or config.execution.server_chunk < -1:
    _fail("execution.server_chunk", config.execution.server_chunk,
          "-1 (auto), 0 (one pass) or N >= 1 rows per chunk")
  if not isinstance(config.execution.devices, int) or config.execution.devices < 0:
    _fail("execution.devices", config.execution.devices, "0 (all local devices) or N >= 1")
  for f, allowed in (("conv_impl", ("", "im2col", "xla")),
                     ("cohort_conv_impl", ("", "im2col", "xla")),
                     ("sampler", ("", "loop", "batched")),
                     ("precision", ("float32", "tf32", "bf16"))):
    if config.execution.get(f, allowed[0]) not in allowed:
      _fail(f"execution.{f}", config.execution.get(f), f"one of {list(allowed)}")
  threads = config.execution.get("cpu_threads", 0)
  if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
    _fail("execution.cpu_threads", threads, "0 (every core the process may use) or N >= 1")
  if not isinstance(config.execution.get("compilation_cache_dir", ""), str):
    _fail("execution.compilation_cache_dir", config.execution.compilation_cache_dir,
          "a directory path, or \"\" (no persistent compilation cache)")
  _positive_int(config, "eval_batch_size")
  n = _get(config, "eval_examples")
  if isinstance(n, bool) or not isinstance(n, int) or n < 0:
    _fail("eval_examples", n, "must be an integer >= 0 (0 = the whole test split)")
  _positive_int(config, "eval_every")
  _check_targets(config)
  _positive_int(config, "checkpoint_every")
  _positive_int(config, "checkpoints_to_keep")
  _positive(config, "log_every_s")
  _validate_baselines(config)
  _choice(config, "grad_dissimilarity.enabled", (True, False))
  _positive_int(config, "grad_dissimilarity.batches")
  _positive_int(config, "grad_dissimilarity.batch_size")
  _validate_privacy(config)
  _validate_system(config)
  if workdir is not None:
    _check_workdir(workdir)


def _count(config, field, allowed):
  v = _get(config, field)
  if isinstance(v, bool) or not isinstance(v, int) or v < 0:
    _fail(field, v, f"must be an integer: {allowed}")


def _validate_radio(config) -> None:
  """time.*: the uplink's constants and the paper-as-written placement / uplink options
  (`system.timing.Radio`, `draw_distances`)."""
  _choice(config, "time.placement", PLACEMENTS)
  _choice(config, "time.uplink", ("full", "shared"))
  for f in ("time.bandwidth_hz", "time.tx_power_w", "time.noise_psd_w_per_hz"):
    _positive(config, f)
  v = _get(config, "time.path_loss_db_at_1km")
  if not _number(v):
    _fail("time.path_loss_db_at_1km", v, "must be a finite number (dB)")
  _non_negative(config, "time.path_loss_db_per_decade")
def _check_targets(config) -> None:
  """report.targets: distinct test accuracies in (0, 1] (summary.json's time_to_accuracy)."""
  targets = _get(config, "report.targets")
  if isinstance(targets, (int, float)) and not isinstance(targets, bool):
    targets = (targets,)
  allowed = "must be distinct accuracies in (0, 1], e.g. --config.report.targets=0.5,0.6,0.7"
  if not isinstance(targets, (tuple, list)):
    _fail("report.targets", targets, allowed)
  if any(not _number(t) or not 0 < t <= 1 for t in targets):
    _fail("report.targets", tuple(targets), allowed)
  if len({float(t) for t in targets}) != len(targets):
    _fail("report.targets", tuple(targets), allowed)


def _validate_baselines(config) -> None:
  """The baselines' own keys (spec §2): FedBuff / CA2FL rules, S2FL grouping."""
  for method in ("fedbuff", "ca2fl"):
    _choice(config, f"{method}.rule", ("ref", "paper"))
    _positive(config, f"{method}.server_lr")
  _choice(config, "fedbuff.staleness", ("none", "sqrt"))
  _choice(config, "ca2fl.true_staleness", (True, False))
  _positive_int(config, "s2fl.num_groups")
  c = config.clients.participating
  if config.algorithm == "s2fl" and c % config.s2fl.num_groups:
    _fail("s2fl.num_groups", config.s2fl.num_groups,
          f"must divide clients.participating ({c})")
  passes = _get(config, "s2fl.search_passes")
  if isinstance(passes, bool) or not isinstance(passes, int) or passes < 0:
    _fail("s2fl.search_passes", passes, "must be an integer >= 0")
  _choice(config, "s2fl.candidates", ("ref", "model"))


PRIVACY_METHODS = ("none", "inversion", "nopeek")
SPLIT_ALGORITHMS = ("gas", "gas_nogen", "minibatch_sfl", "s2fl")


def _validate_privacy(config) -> None:
  """privacy.*: the regulariser of the split methods' client loss (`gas_jax.privacy`)."""
  _choice(config, "privacy.method", PRIVACY_METHODS)
  _non_negative(config, "privacy.gamma")
  tau = _get(config, "privacy.tau")
  if not _number(tau) or not 0 <= tau <= 1:
    _fail("privacy.tau", tau, "must be a number in [0, 1] (an SSIM threshold)")
  blocks = _get(config, "privacy.decoder_blocks")
  if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
    _fail("privacy.decoder_blocks", blocks, "must be an integer >= 0 (ResSFL's N)")
  _positive_int(config, "privacy.decoder_channels")
  _positive(config, "privacy.decoder_lr")
  method = config.privacy.method
  if method == "none":
    return
  if config.algorithm not in SPLIT_ALGORITHMS:
    _fail("privacy.method", method, f"applies to the split methods ({', '.join(SPLIT_ALGORITHMS)})"
          f", not algorithm={config.algorithm!r}: its clients send no activations")
  if tuple(config.get("seeds", ()) or ()):
    _fail("privacy.method", method, "is not implemented with config.seeds (the vmapped runs "
          "axis); run one seed per process (--config.seed=S, launch/compare.py)")


def _validate_system(config) -> None:
  """system.*: clients that come and go (`gas_jax.system.availability`, docs/scenarios.md)."""
  from gas_jax.system import availability  # noqa: PLC0415

  if config.get("system") is None:
    return
  _choice(config, "system.speed", ("uniform", "lognormal", "fixed"))
  _non_negative(config, "system.sigma")
  _choice(config, "system.availability", ("always", "markov", "trace"))
  for f in ("system.mean_online_s", "system.mean_offline_s"):
    _positive(config, f)
  for f in ("system.redraw_s", "system.round_deadline_s"):
    if _get(config, f) is not None:
      _positive(config, f)
  p = _get(config, "system.dropout")
  if not _number(p) or not 0 <= p <= 1:
    _fail("system.dropout", p, "must be a probability in [0, 1]")
  if p == 1:
    _fail("system.dropout", p, "1 loses every update: no client ever returns (use p < 1)")
  if config.system.availability == "trace":
    availability.read_trace(config.system.trace, config.clients.num)
  if tuple(config.get("seeds", ()) or ()) and not availability.is_default(config):
    _fail("seeds", tuple(config.seeds), "cannot be combined with a non-default system.* "
          "scenario yet; run one seed per process (--config.seed=S, launch/compare.py)")


def _check_workdir(workdir: str) -> None:
  if not isinstance(workdir, str) or not workdir.strip():
    raise ConfigError(f"workdir={workdir!r} is invalid: give a directory, e.g. --workdir=runs/x")
  placement.check_system(workdir)   # `/`, /usr, ...: refused before probing that it is writable
  path = os.path.abspath(workdir)
  probe = path
  while not os.path.exists(probe):
    parent = os.path.dirname(probe)
    if parent == probe:
      break
    probe = parent
  if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
    raise ConfigError(f"workdir={workdir!r} is invalid: {probe} is not a writable directory")


def validate_with_data(config: ml_collections.ConfigDict, num_classes: int,
                       num_train: int, num_test: int) -> None:
  """Checks that need the dataset (class count, sizes), still before any training."""
  k = config.clients.num
  if config.get("eval_examples", 0) > num_test:
    _fail("eval_examples", config.eval_examples,
          f"must be <= the {num_test} test images (0 = all of them)")
  if config.data.partition == "shard" and (config.data.shards * k) % num_classes:
    _fail("data.shards", config.data.shards,
          f"data.shards * clients.num ({config.data.shards} * {k}) must be divisible by the "
          f"number of classes ({num_classes})")
  if config.data.partition == "dirichlet" and config.data.min_size * k > num_train:
    _fail("data.min_size", config.data.min_size,
          f"min_size * clients.num must be <= the {num_train} training samples")


def validate_partition(config: ml_collections.ConfigDict, sizes) -> None:
  """Checks of the drawn partition (client sample counts), before anything is written."""
  sizes = [int(n) for n in sizes]
  empty = [k for k, n in enumerate(sizes) if n == 0]
  if empty:
    _fail("clients.num", config.clients.num,
          f"{len(empty)} of the {len(sizes)} clients would hold no samples (e.g. client "
          f"{empty[0]}) under data.partition={config.data.partition!r}; use fewer clients")
  if config.clients.batch_size > max(sizes):
    _fail("clients.batch_size", config.clients.batch_size,
          f"must be <= the largest client's {max(sizes)} samples (a larger minibatch is only "
          "padding)")


# Simulated times beyond this are refused: they would print as Infinity (not JSON) or overflow.
MAX_SIMULATED_S = 1e30


def validate_time_model(config: ml_collections.ConfigDict, time_model) -> None:
  """The simulated clock stays finite over the whole run (spec §1.9's time model)."""
  prof = time_model.profiles
  rate = np.min(prof.rate)
  if not rate > 0:
    _fail("time.distance_max_km", config.time.distance_max_km,
          f"the uplink rate at that distance is {rate:g} bit/s, so uploads would never end; "
          "keep distances within a few km (the paper's cell radius is 1 km)")
  steps = config.num_global_iters * config.clients.local_iters * config.clients.num
  compute = steps * 2 * max(time_model.client_flops, time_model.full_flops) / np.min(prof.compute)
  upload = steps * max(config.clients.batch_size * time_model.activation_bits,
                       time_model.client_model_bits, time_model.full_model_bits) / rate
  if not compute + upload < MAX_SIMULATED_S:
    field = "time.compute_min" if not compute < upload else "time.distance_max_km"
    _fail(field, _get(config, field),
          f"the simulated clock could reach {compute + upload:.3g} s (> {MAX_SIMULATED_S:g} s) "
          f"over {config.num_global_iters} global iterations; use realistic time.* values")


def apply_partition_arg(config: ml_collections.ConfigDict, arg: str) -> None:
  """Config argument 'shard2', 'shard4', 'dir0.1', 'iid' -> data.partition/shards/alpha; a
  label that names no partition (shard0, dir-1, dirnan, dirinf, ...) raises ConfigError."""
  bad = ConfigError(f"partition {arg!r} is invalid: use shardN (N >= 1 labels per client), "
                    "dirALPHA (a finite ALPHA > 0) or iid")
  try:
    if arg.startswith("shard"):
      shards = int(arg[5:] or 2)
      if shards < 1:
        raise bad
      config.data.partition, config.data.shards = "shard", shards
    elif arg.startswith("dir"):
      alpha = float(arg[3:])
      if not (math.isfinite(alpha) and alpha > 0):
        raise bad
      config.data.partition, config.data.alpha = "dirichlet", alpha
    elif arg == "iid":
      config.data.partition = "iid"
    else:
      raise bad
  except ValueError:
    raise bad from None
