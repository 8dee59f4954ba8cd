"""Plain, slow, obviously-correct MiniBatch-SFL (spec §2.4, REF semantics).

Per round: C clients drawn, all start from theta_glob; per local iteration phi_snap <- phi, every
client in order forwards, takes the plain-CE gradient through phi_snap and steps (one shared
client SGD state), then ONE server step from phi_snap on the concatenated activations (one
shared server SGD state); theta_glob <- data-size weighted average. Float64 parameters, the
project's network for forward/backward.
"""
import numpy as np

from helpers.oracles import common


class MiniBatchSflOracle:

  def __init__(self, net, theta0, phi0, x_train, y_train, parts, next_batch, clock, rng, *,
               participating, local_iters, batch_size, lr, momentum, weight_decay, clip_norm):
    self.net, self.model = net, net.model
    self.x, self.y = np.asarray(x_train, np.float32), np.asarray(y_train)
    self.K, self.C, self.E, self.B = len(parts), participating, local_iters, batch_size
    self.sizes = np.array([len(p) for p in parts], np.float64)
    self.next_batch, self.clock, self.rng = next_batch, clock, rng
    self.theta, self.phi = common.to64(theta0), common.to64(phi0)
    self.copt = common.SGD(lr, momentum, weight_decay, clip_norm)
    self.sopt = common.SGD(lr, momentum, weight_decay, clip_norm)
    self.t, self.t_now = 0, 0.0
    self.client_losses, self.server_losses, self.batches, self.phis = [], [], [], []

  def run_iteration(self):
    clk = self.clock
    S = [int(k) for k in self.rng.choice(self.K, self.C, replace=False)]
    p = self.sizes[S] / self.sizes[S].sum()
    tau = {k: self.t_now for k in S}
    thetas = [common.copy(self.theta) for _ in S]
    for _ in range(self.E):
      for k in S:
        tau[k] += clk.fc(k) + clk.act_up(k)
      barrier = max(tau.values())
      for k in S:
        tau[k] = barrier + clk.fc(k)
      phi_snap = self.phi
      acts, ys = [], []
      for i, k in enumerate(S):
        idx, mask = self.next_batch(k)
        idx = np.asarray(idx)[np.asarray(mask, bool)]
        self.batches.append(idx.copy())
        (loss, a), g = self.net.client_grad(common.to32(thetas[i]), common.to32(phi_snap),
                                            self.x[idx], self.y[idx])
        self.client_losses.append(float(loss))
        thetas[i] = self.copt.step(thetas[i], g)
        acts.append(np.asarray(a))
        ys.append(self.y[idx])
      ax, ay, valid = common.pad_rows(np.concatenate(acts), np.concatenate(ys), self.C * self.B)
      loss, g = self.net.server_grad(common.to32(phi_snap), ax, ay, valid)
      self.server_losses.append(float(loss))
      self.phi = self.sopt.step(phi_snap, g)
      self.phis.append(common.copy(self.phi))
    for k in S:
      tau[k] += clk.model_up(k)
    self.t_now = max(tau.values())
    self.theta = common.tree_map(lambda *ws: sum(pk * w for pk, w in zip(p, ws)), *thetas)
    self.t += 1
    return S
