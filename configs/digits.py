r"""The default job: GAS on scikit-learn's digits (embedded, no download), cnn_small.

GAS with shard=2 partition, K=20 clients, C=10 concurrent, E=10 local iterations, B=32, T=60
global iterations, SGD lr 0.01 / momentum 0.9 / weight decay 5e-4 (REF settings).

    python -m gas_jax.main --config=configs/digits.py --workdir=/tmp/gas_digits

Expected (measured 2026-11-25, seed 0): summary.json final_accuracy 0.9706 (mean test accuracy
of the last 5 evaluations, one per global iteration with eval_every=1), about 77 s for the run on a 2-core CPU: mean_iter_wall_s 1.01
(evaluation and the first compilations included; 0.91 with
`GasRunner.precompile_server()` first; `python -m benchmarks.run iteration
--config=configs/digits.py --iters=20`: 0.87 s steady state). All methods on digits, 3 seeds: docs/results.md. Argument: a partition, `:shard2`
(default), `:dir0.1`, any `shardN`, `dirALPHA` or `iid`, e.g. `--config=configs/digits.py:dir0.1`.
"""
import ml_collections
from ml_collections import config_dict

from configs import _args


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  parsed = _args.parse(arg, {"partition": _args.PARTITION}, "configs/digits.py")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.seeds = ()   # several seeds vmapped in one program (GAS): --config.seeds=0,1,2
  c.algorithm = "gas"
  # "ref": the authors' code (spec §1); "paper": every as-written choice of the paper at once
  # (docs/paper_as_written.md; each one is also a flag of its own, which wins when set).
  c.variant = "ref"
  c.generate = True
  c.num_global_iters = 60

  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"
  c.data.dir = ""                 # where real datasets live (unused by digits)
  c.data.partition = "shard"      # "iid" | "shard" | "dirichlet"
  c.data.shards = 2               # shards (labels) per client for "shard"
  c.data.alpha = 0.1              # Dirichlet concentration for "dirichlet"
  c.data.min_size = 10            # Dirichlet: retry until every client has this many samples
  c.data.augment = False          # random crop (pad 4) + horizontal flip, CIFAR-like data

  c.clients = ml_collections.ConfigDict()
  c.clients.num = 20              # K
  c.clients.participating = 10    # C (concurrency, activation- and model-buffer size)
  c.clients.local_iters = 10      # E
  c.clients.batch_size = 32       # B
  c.clients.momentum = "shared"   # "shared" (REF: one buffer for all clients) | "per_client"
  c.clients.aggregation = "uniform"  # "uniform" (REF, 1/C) | "data_size" (paper eq. 10)
  c.clients.activation_buffer = 0  # GAS: Q_s minibatches per server update (0 = C, REF)
  c.clients.model_buffer = 0       # GAS: Q_c models per aggregation (0 = C, REF)
  c.clients.la_tau = 1.0           # GAS: logit adjustment tau, CE(f + tau log p_k) (eq. 6; 0 = plain CE)

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "sgd"        # "sgd" | "adam"
  c.optimizer.lr = 0.01
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.optimizer.clip_norm = 10.0
  c.optimizer.decay = "none"      # "none" (REF) | "sqrt" (paper: eta_t = eta_0 / sqrt(t))

  c.model = ml_collections.ConfigDict()
  c.model.name = "cnn_small"
  c.model.split = "default"
  # BatchNorm in the server part: the client-gradient forward through phi updates phi's running
  # statistics on every client batch (REF, spec §1.5, §6.16); False: only server updates do.
  c.model.server_bn_client_steps = True

  # Weight tag s(n) of each activation in the Gaussian statistics (spec §1.6, §6.2).
  c.weighting = ml_collections.ConfigDict()
  # n = tE + e, the activation's own training progress (paper); "exp"/"poly" are applied
  # relative to the largest tag so far (same statistics, no overflow: gas_jax/weighting.py).
  c.weighting.fn = "ref"          # "ref" (client counter, REF) | "linear" n | "exp" a e^{bn} | "poly" a n^b
  c.weighting.a = 1.0
  c.weighting.b = 1.0

  c.stats = ml_collections.ConfigDict()
  c.stats.method = "sqrt"         # "sqrt": Sigma = G^T G / W + r I (exact, no Cholesky) | "cholesky" (REF-literal)
  c.stats.covariance = "full"     # "full" | "diag" (per-dimension variances) | "lowrank" (top `rank` directions + isotropic rest)
  # "diag" only: how the server batch is formed once every label has statistics.
  # "ref" (default): REF's commented-out diagonal variant (spec §3.5), written by the authors for
  #   exactly the wide splits "diag" is meant for (Table 5): every label gets exactly B rows - its
  #   first B real rows (more are dropped from the server batch, not from the statistics), topped
  #   up with mu + sqrt(var + 1e-5) eps. "topup": the full-covariance rule (§1.5: labels with
  #   > B real rows keep them all, no extra 1e-5), to change only the covariance model.
  c.stats.diag_rule = "ref"
  c.stats.rank = 64               # "lowrank": directions kept per label
  c.stats.refresh_every = 1       # "cholesky": refactorise every N server updates (1 = REF, exact)
  c.stats.jitter = 1e-5           # REF adds jitter*I on every merge; 0 = paper eq. (12)
  c.stats.block = 4               # rows per label-pure block in the merge (factor padding)
  # Generated rows of a server update (spec §1.5): every label is topped up to gen_rows rows
  # (0 = B, REF; a label with more real rows keeps them); "equal" (paper "each label has an
  # equal amount of data"): to max(gen_rows, the largest label count), so all labels are equal.
  c.stats.gen_rows = 0
  c.stats.gen_balance = "topup"   # "topup" (REF) | "equal" (paper)

  # Time model (spec §1.9). ref_constants=True uses REF's hard-coded AlexNet-L2 constants.
  c.time = ml_collections.ConfigDict()
  c.time.ref_constants = False
  c.time.compute_min = 1e9
  c.time.compute_max = 1e10
  c.time.distance_min_km = 0.1
  c.time.distance_max_km = 1.0    # the cell radius
  c.time.placement = "radius"     # "radius": d ~ U(min, max) (REF) | "area": uniform over the cell's area (paper)
  c.time.uplink = "full"          # "full": every client has bandwidth W (REF) | "shared": static W/C each (paper's orthogonal uplink)
  c.time.bandwidth_hz = 1e7       # W
  c.time.tx_power_w = 0.2         # P
  c.time.noise_psd_w_per_hz = 3.981e-21   # N0 (-174 dBm/Hz)
  c.time.path_loss_db_at_1km = 128.1      # PL = a + b log10(d_km) dB (3GPP TR 36.814)
  c.time.path_loss_db_per_decade = 37.6

  c.execution = ml_collections.ConfigDict()
  c.execution.cohort_size = -1    # -1 fastest for the backend (CPU 1, else 0) | 1 event by event | 0 unbounded | N
  c.execution.devices = 0         # devices of the cohort mesh (0 = all local devices)
  c.execution.vmap_seeds = -1     # with seeds: -1 auto (CPU 0, else 1) | 1 vmapped | 0 a loop
  c.execution.server_chunk = -1   # server fwd/bwd in N-row chunks: -1 auto (CPU 32) | 0 one pass
  c.execution.compilation_cache_dir = ""  # XLA's persistent compilation cache ("" = off)
  c.execution.conv_impl = ""       # "" auto (CPU im2col, else xla) | im2col | xla
  c.execution.cohort_conv_impl = ""  # vmapped cohorts: "" auto (TPU xla, else im2col) | im2col | xla
  c.execution.sampler = ""         # square-root statistics: "" auto (CPU loop, else batched) | loop | batched
  c.execution.cpu_threads = 0      # CPU cores of this process: 0 all it may use | N the first N
  c.execution.precision = "float32"  # float32 | tf32 | bf16 (models in bfloat16, float32 params/stats)
  c.checkpoint_every = 10        # global iterations between checkpoints (also on SIGTERM/SIGINT)
  c.checkpoints_to_keep = 2
  c.eval_batch_size = 1000
  c.eval_examples = 0            # test accuracy on N test images, one fixed draw for every method and seed (0 = all)
  c.eval_every = 1               # evaluate every N global iterations (and always the last one)
  c.log_every_s = 10.0
  # Baselines (spec §2): REF semantics by default; published variants as options.
  c.fedbuff = ml_collections.ConfigDict()
  c.fedbuff.rule = "ref"          # "ref" (average the buffered models) | "paper" (buffered deltas)
  c.fedbuff.server_lr = 1.0       # "paper": eta_g in w <- w + eta_g * mean(Delta)
  c.fedbuff.staleness = "none"    # "paper": "none" | "sqrt" (Delta / sqrt(1 + staleness))
  c.ca2fl = ml_collections.ConfigDict()
  c.ca2fl.rule = "ref"            # "ref" (w += sum_k P_k h_k) | "paper" (v = hbar + mean(Delta - h))
  c.ca2fl.server_lr = 1.0         # "paper": eta in w <- w + eta * v
  c.ca2fl.true_staleness = False  # False: REF aliasing (re-dispatched clients use the live global)
  c.s2fl = ml_collections.ConfigDict()
  c.s2fl.num_groups = 2           # client groups per round (must divide clients.participating)
  c.s2fl.search_passes = 100      # REF's grouping local-search passes
  c.s2fl.candidates = "ref"       # time-only split candidates: "ref" (REF's two AlexNet pairs,
                                  # always) | "model" (the model's own split only)
  # Gradient dissimilarity of the server update (paper Fig. 2a, spec §1.10; GAS only).
  c.grad_dissimilarity = ml_collections.ConfigDict()
  c.grad_dissimilarity.enabled = False
  c.grad_dissimilarity.batches = 10       # test minibatches averaged into the "true" gradient
  c.grad_dissimilarity.batch_size = 128
  # Training against the split-learning leak (paper Appendix I, eq. 44; docs/privacy.md,
  # "Training against the leak"): a regulariser in the client loss of the split methods (gas,
  # gas_nogen, minibatch_sfl, s2fl). "none" changes nothing (REF numbers).
  c.privacy = ml_collections.ConfigDict()
  c.privacy.method = "none"       # "none" | "inversion" (ResSFL: simulated decoder, SSIM) | "nopeek" (DCOR)
  c.privacy.gamma = 0.3           # strength gamma >= 0 (ResSFL's alpha = 0.3)
  c.privacy.tau = 0.5             # "inversion": SSIM threshold in [0, 1], gamma max(SSIM - tau, 0)
  c.privacy.decoder_blocks = 4    # "inversion": residual blocks N of the simulated decoder (res_normN4C64)
  c.privacy.decoder_channels = 64  # "inversion": its channels C
  c.privacy.decoder_lr = 1e-3     # "inversion": Adam learning rate of its one step per client step
  # Clients that come and go (issue #29, docs/scenarios.md): the same behaviour for every
  # method; the defaults are REF's (always available, no dropout, one uniform speed draw).
  c.system = ml_collections.ConfigDict()
  c.system.speed = "uniform"      # "uniform" (REF) | "lognormal" (log-sd sigma) | "fixed"
  c.system.sigma = 1.0            # "lognormal": log-sd around sqrt(compute_min * compute_max)
  c.system.redraw_s = config_dict.placeholder(float)  # None: never; R: speeds redrawn every R s
  c.system.availability = "always"  # "always" (REF) | "markov" (on/off process) | "trace"
  c.system.mean_online_s = 100.0  # "markov": mean online duration (simulated s)
  c.system.mean_offline_s = 50.0  # "markov": mean offline duration (simulated s)
  c.system.trace = ""             # "trace": JSON or CSV online intervals (configs/traces/)
  c.system.dropout = 0.0          # p: a dispatched client fails at a uniform point of its work
  c.system.round_deadline_s = config_dict.placeholder(float)  # sync rounds: None = wait for all
  # How summary.json reads the evaluations (not the training): time_to_accuracy's targets.
  c.report = ml_collections.ConfigDict()
  c.report.targets = (0.5, 0.6, 0.7)  # test accuracies in (0, 1]: first evaluated iteration at or above each
  if "partition" in parsed:
    _args.apply_partition(c, parsed["partition"])
  return c
