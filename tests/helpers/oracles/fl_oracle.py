"""Plain, slow, obviously-correct FL baselines on the unsplit net, REF semantics:
FedAvg (spec §2.1) and CA2FL (spec §2.3, including REF's aliasing).

One SGD optimiser over the whole (client, server) pair, shared by every client and round
(spec §0 quirk), plain mean CE, no logit adjustment; parameters in float64 numpy, the network's
forward/backward through the project's model (`common.Net.full_grad`).
"""
import jax
import numpy as np

from helpers.oracles import common


class _FLBase:

  def __init__(self, net, params0, x_train, y_train, parts, next_batch, clock, rng, *,
               participating, local_iters, lr, momentum, weight_decay, clip_norm):
    self.net = net
    self.x, self.y = np.asarray(x_train, np.float32), np.asarray(y_train)
    self.K, self.C, self.E = len(parts), participating, local_iters
    self.sizes = np.array([len(p) for p in parts], np.float64)
    self.next_batch, self.clock, self.rng = next_batch, clock, rng
    self.glob = common.to64(tuple(params0))
    self.opt = common.SGD(lr, momentum, weight_decay, clip_norm)
    self.t, self.t_now = 0, 0.0
    self.losses, self.batches, self.trained = [], [], []

  def train(self, k, w):
    """Client k's E local steps from w (a float64 tree, not modified)."""
    self.trained.append(k)
    for _ in range(self.E):
      idx, mask = self.next_batch(k)
      idx = np.asarray(idx)[np.asarray(mask, bool)]
      self.batches.append(idx.copy())
      loss, grads = self.net.full_grad(common.to32(w), self.x[idx], self.y[idx])
      self.losses.append(float(loss))
      w = self.opt.step(w, grads)
    return w


class FedAvgOracle(_FLBase):
  """Spec §2.1."""

  def run_iteration(self):
    S = [int(k) for k in self.rng.choice(self.K, self.C, replace=False)]
    self.t_now = max(self.t_now + self.clock.fl_duration(k, self.E) for k in S)
    models = [self.train(k, self.glob) for k in S]          # sequentially, each from w_glob
    p = self.sizes[S] / self.sizes[S].sum()
    self.glob = common.tree_map(lambda *ws: sum(pk * w for pk, w in zip(p, ws)), *models)
    self.t += 1
    return S


class Ca2flOracle(_FLBase):
  """Spec §2.3, REF rule. The global model is one mutable dict updated *in place* at each
  flush; the initial C slots hold copies of w0 (by value), every re-dispatched slot holds a
  reference to the global dict itself, so it trains from the live global at its arrival:
  REF's aliasing, reproduced by the same mechanism rather than by a flag."""

  def __init__(self, *args, **kw):
    super().__init__(*args, **kw)
    leaves, self.treedef = jax.tree_util.tree_flatten(self.glob)
    self.glob_dict = {i: leaf for i, leaf in enumerate(leaves)}
    self.caches = [None] * self.K                           # h_k (None = never arrived = 0)
    self.P = self.sizes / self.sizes.sum()                  # data weights over ALL K clients
    self.active = [int(k) for k in self.rng.choice(self.K, self.C, replace=False)]
    self.tau = np.zeros(self.K)
    for k in self.active:
      self.tau[k] = 0.0 + self.clock.fl_duration(k, self.E)
    self.slot_model = [{i: a.copy() for i, a in self.glob_dict.items()} for _ in self.active]
    self.version = 0                                        # flushes so far
    self.dispatch_version = [0] * self.C
    self.count = 0
    self.live_arrivals = 0      # arrivals of re-dispatched clients
    self.moved_arrivals = 0     # ... whose start moved since dispatch (the aliasing mattered)
    self.arrivals = []

  def _tree(self, d):
    return jax.tree_util.tree_unflatten(self.treedef, [d[i] for i in range(len(d))])

  def run_iteration(self):
    while True:
      s = int(np.argmin([self.tau[k] for k in self.active]))   # ties -> earlier slot
      k = self.active[s]
      self.t_now = float(self.tau[k])
      start_dict = self.slot_model[s]
      if start_dict is self.glob_dict:
        self.live_arrivals += 1
        self.moved_arrivals += self.dispatch_version[s] != self.version
      start = self._tree({i: a.copy() for i, a in start_dict.items()})
      end = self.train(k, start)
      self.caches[k] = common.tree_map(np.subtract, end, start)   # h_k <- w_end - w_disp
      self.arrivals.append(k)
      self.count += 1
      flushed = self.count == self.C
      if flushed:
        upd = None
        for j in range(self.K):                                  # sum_k P_k h_k over all K
          if self.caches[j] is not None:
            term = common.tree_map(lambda h, pj=self.P[j]: pj * h, self.caches[j])
            upd = term if upd is None else common.tree_map(np.add, upd, term)
        for i, u in enumerate(jax.tree_util.tree_leaves(upd)):
          self.glob_dict[i] = self.glob_dict[i] + u            # in place: keys re-assigned
        self.glob = self._tree(self.glob_dict)
        self.count = 0
        self.t += 1
        self.version += 1
      inactive = [j for j in range(self.K) if j not in self.active]
      j = int(self.rng.choice(inactive))
      self.active[s] = j
      self.tau[j] = self.t_now + self.clock.fl_duration(j, self.E)
      self.slot_model[s] = self.glob_dict                       # a reference, not a copy
      self.dispatch_version[s] = self.version
      if flushed:
        return
