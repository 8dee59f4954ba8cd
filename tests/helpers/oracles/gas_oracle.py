"""A plain, slow, obviously-correct GAS (spec §1, REF semantics), one event at a time.

No cohorts, no packing, no square-root factor, no chunking: an explicit event loop (§1.3), the
activation buffer as a Python list, per-label means and *dense* covariances in float64 merged
exactly as REF's `IncrementalStats.update` (§1.5, +jitter*I on every merge but a label's first),
REF's SGD (§0) in float64 numpy. The network's forward/backward is the project's model via
`jax.grad` (float32).

Generated activations are random; to compare with the engine they are *injected*:
`generated(u)` returns the (x [n, *act_shape], y [n]) rows the engine generated at server
update u, and the oracle only records how many it expected per label (max(0, B - n_y) once all
labels have statistics) next to how many it was given.
"""
import numpy as np

from helpers.oracles import common


class LabelStats:
  """mu_y, Sigma_y (D x D), W_y, seen_y and the accumulated jitter R_y, float64."""

  def __init__(self, num_classes, dim, jitter):
    self.mean = np.zeros((num_classes, dim))
    self.cov = np.zeros((num_classes, dim, dim))
    self.weight = np.zeros(num_classes)
    self.jitter_acc = np.zeros(num_classes)
    self.seen = np.zeros(num_classes, bool)
    self.merges = np.zeros(num_classes, np.int64)
    self.jitter = jitter

  def merge(self, y, a, w):
    """Merges rows a [n, D] of label y with weight tags w [n] (spec §1.5)."""
    wb = float(np.sum(w))
    mub = (w @ a) / wb
    diff = a - mub
    covb = (diff * w[:, None]).T @ diff / wb          # biased: / weight sum
    if not self.seen[y]:
      self.mean[y], self.cov[y], self.weight[y] = mub, covb, wb
      self.seen[y] = True
    else:
      mu, cov, wold = self.mean[y].copy(), self.cov[y], self.weight[y]
      wnew = wold + wb
      d = wold / wnew
      mu2 = d * mu + (1.0 - d) * mub
      self.cov[y] = (d * (cov + np.outer(mu2 - mu, mu2 - mu))
                     + (1.0 - d) * (covb + np.outer(mu2 - mub, mu2 - mub))
                     + self.jitter * np.eye(a.shape[1]))
      self.mean[y], self.weight[y] = mu2, wnew
      self.jitter_acc[y] = d * self.jitter_acc[y] + self.jitter
    self.merges[y] += 1


class GasOracle:
  """State of spec §1.1 and the loop of §1.3.

  Args:
    net: `common.Net` of the split model.
    theta0, phi0: initial client / server parameters (the same as the engine's).
    x_train, y_train: the train set (host arrays); parts: K index arrays (the partition).
    next_batch: k -> (idx [B], mask [B]), client k's next minibatch (the engine's ClientData
      order, from a second ClientData with the same seed); the oracle keeps only idx[mask].
    clock: `common.Clock`; rng: numpy Generator of the scheduler's draws (initial active set
      = rng.permutation(K)[:C], replacements rng.choice(inactive)).
    generated: u -> (x, y) generated rows of server update u (injected from the engine).
    activation_buffer, model_buffer: Q_s minibatches per server update, Q_c models per
      aggregation (0: C, REF); la_tau: the logit adjustment's strength (eq. 6; REF 1);
      gen_level: counts [M] -> the rows every label is topped up to (default: B, REF §1.5).
  """

  def __init__(self, net, theta0, phi0, x_train, y_train, parts, next_batch, clock, rng, *,
               num_classes, participating, local_iters, batch_size, lr, momentum,
               weight_decay, clip_norm, jitter, generated, activation_buffer=0, model_buffer=0,
               la_tau=1.0, gen_level=None):
    self.net, self.model = net, net.model
    self.x, self.y = np.asarray(x_train, np.float32), np.asarray(y_train)
    self.K, self.C, self.E, self.B, self.M = len(parts), participating, local_iters, \
        batch_size, num_classes
    self.next_batch, self.clock, self.rng, self.generated = next_batch, clock, rng, generated
    self.Q_s, self.Q_c = activation_buffer or self.C, model_buffer or self.C
    self.la_tau = la_tau
    self.gen_level = gen_level or (lambda counts: self.B)
    self.act_shape = tuple(self.model.activation_shape)
    self.dim = int(np.prod(self.act_shape))
    self.log_prior = [common.log_prior(self.y[p], self.M) for p in parts]
    # §1.1 state
    self.theta_glob = common.to64(theta0)
    self.slots = [common.to64(theta0) for _ in range(self.C)]
    self.phi = common.to64(phi0)
    self.client_opt = common.SGD(lr, momentum, weight_decay, clip_norm)
    self.server_opt = common.SGD(lr, momentum, weight_decay, clip_norm)
    self.stats = LabelStats(self.M, self.dim, jitter)
    self.buffer = []                 # [(acts [n, D] float64, labels [n], tag)]
    self.model_sum, self.q_c = None, 0
    self.U, self.TW, self.t = 0, 1, 0
    self.wc = np.ones(self.K, np.int64)
    self.count = np.zeros(self.K, np.int64)
    self.tau = np.zeros(self.K)
    self.round_times = []
    # §1.2 steps 6-7
    self.order = [int(k) for k in rng.permutation(self.K)[:self.C]]
    for k in self.order:
      self.tau[k] = 0.0 + clock.fc(k) + clock.act_up(k)
    # logs
    self.events, self.client_losses, self.batches = [], [], []
    self.server_log = []             # one dict per server update

  # -- one client local step (§1.3) ------------------------------------------------------------
  def step(self):
    clk = self.clock
    s = int(np.argmin([self.tau[k] for k in self.order]))    # strict <: ties -> first slot
    k = self.order[s]
    theta = self.slots[s]
    idx, mask = self.next_batch(k)
    idx = np.asarray(idx)[np.asarray(mask, bool)]
    self.batches.append(idx.copy())
    x, y = self.x[idx], self.y[idx]
    lp = np.asarray(self.la_tau * self.log_prior[k], np.float32)
    (loss, act), grads = self.net.la_client_grad(common.to32(theta), common.to32(self.phi),
                                                 x, y, lp)
    tag = int(self.wc[k])
    self.buffer.append((np.asarray(act, np.float64).reshape(len(idx), self.dim), y.copy(), tag))
    self.wc[k] += 1
    self.client_losses.append(float(loss))
    self.slots[s] = self.client_opt.step(theta, grads)
    self.tau[k] += clk.fc(k)                                  # client backward
    ev = dict(client=k, slot=s, tag=tag, server_update=False, upload=False, aggregate=False,
              time=float(self.tau[k]), iteration_time=0.0)
    if len(self.buffer) == self.Q_s:
      ev["server_update"] = True
      self.server_update()
      self.buffer = []
    self.count[k] += 1
    if self.count[k] == self.E:
      ev["upload"] = True
      self.count[k] = 0
      self.q_c += 1
      self.tau[k] += clk.model_up(k)
      self.round_times.append(float(self.tau[k]))
      contrib = common.tree_map(lambda p: p / self.Q_c, self.slots[s])   # uniform 1/Q_c
      self.model_sum = contrib if self.model_sum is None else common.tree_map(
          np.add, self.model_sum, contrib)
      if self.q_c == self.Q_c:
        self.TW += self.U
        self.theta_glob, self.model_sum, self.q_c = self.model_sum, None, 0
        self.t += 1
        ev["aggregate"], ev["iteration_time"] = True, max(self.round_times)
        self.round_times = []
      self.slots[s] = common.copy(self.theta_glob)
      inactive = [j for j in range(self.K) if j not in self.order]   # ascending
      j = int(self.rng.choice(inactive))
      self.order[s] = j
      self.wc[j] = self.TW
      self.tau[j] = self.tau[k] + clk.fc(j) + clk.act_up(j)
    else:
      self.tau[k] += clk.fc(k) + clk.act_up(k)
    self.events.append(ev)
    return ev

  # -- SERVER_UPDATE (§1.5) --------------------------------------------------------------------
  def server_update(self):
    u = self.U
    self.U += 1
    acts = np.concatenate([a for a, _, _ in self.buffer])
    labels = np.concatenate([y for _, y, _ in self.buffer])
    tags = np.concatenate([np.full(len(y), float(tag)) for _, y, tag in self.buffer])
    for y in np.unique(labels):                               # real rows only
      r = labels == y
      self.stats.merge(int(y), acts[r], tags[r])
    log = dict(update=u, buffer=(acts.copy(), labels.copy(), tags.copy()))
    counts = np.bincount(labels, minlength=self.M)
    expected = np.zeros(self.M, np.int64)
    if self.stats.seen.all():
      expected = np.maximum(0, self.gen_level(counts) - counts)
    log["expected_gen"] = expected
    if self.stats.seen.all():
      gx, gy = self.generated(u)
      gx = np.asarray(gx, np.float64).reshape(len(gy), self.dim)
      gy = np.asarray(gy)
      log["given_gen"] = np.bincount(gy, minlength=self.M)
      xs, ys = [], []
      for y in range(self.M):                                 # label order, as REF rebuilds it
        xs += [acts[labels == y], gx[gy == y]]
        ys += [labels[labels == y], gy[gy == y]]
      batch_x, batch_y = np.concatenate(xs), np.concatenate(ys)
    else:
      log["given_gen"] = np.zeros(self.M, np.int64)
      batch_x, batch_y = acts, labels
    log["generated"] = int(len(batch_y) - len(labels))
    bx, by, valid = common.pad_rows(batch_x.reshape((-1,) + self.act_shape), batch_y,
                                    self.Q_s * self.B + self.M * self.gen_level(
                                        np.full(self.M, self.Q_s * self.B)))
    loss, grads = self.net.server_grad(common.to32(self.phi), bx, by, valid)
    self.phi = self.server_opt.step(self.phi, grads)
    log.update(loss=float(loss), phi=common.copy(self.phi), mean=self.stats.mean.copy(),
               weight=self.stats.weight.copy(), seen=self.stats.seen.copy(),
               jitter=self.stats.jitter_acc.copy())
    self.server_log.append(log)

  def run_iteration(self):
    """Steps until the next aggregation (one global iteration); returns its events."""
    start = len(self.events)
    while True:
      ev = self.step()
      if ev["aggregate"]:
        return self.events[start:]
