r"""FedBuff / CA2FL simulated clock at T global iterations: REF's loop vs gas-jax's, over many seeds.

    python launch/ref_check/clock_spread.py --seeds=300 --T=60 --E=10

REF (baseline/FedBuff.py and CA2FL.py, transcribed: `find_client_with_min_time`, `replace_user`,
2E `model_process` + `transmit_model` per dispatch, REF's AlexNet constants) draws the client
speeds and distances from numpy's legacy generator; gas-jax draws them from the seed's own
streams (`timing.draw_profiles`) and runs `fl_runner.AsyncClock`. The two loops are the same
procedure (`tests/system/test_baseline_clocks.py::test_async_clock` checks gas-jax's clock event by
event against it), so only the draws differ: the script prints the mean and spread of the clock
over seeds for both, and the spread of a mean over 3 seeds.
"""
import numpy as np
from absl import app, flags

from gas_jax.runners import fl_runner
from gas_jax.system import timing

_SEEDS = flags.DEFINE_integer("seeds", 300, "Seeds per implementation.")
_T = flags.DEFINE_integer("T", 60, "Global iterations (buffer flushes).")
_E = flags.DEFINE_integer("E", 10, "Local iterations.")
_K = flags.DEFINE_integer("K", 20, "Clients.")
_C = flags.DEFINE_integer("C", 10, "Concurrency and buffer size.")
F_FULL = timing.REF_ALEXNET_L2["full_flops"]
M_FULL = timing.REF_ALEXNET_L2["full_model_bits"]


def ref_clock(seed, K, C, E, T):
  """REF's loop with its own draw order (speeds, distances, initial order, replacements)."""
  rs = np.random.RandomState(seed)
  computing = rs.uniform(10 ** 9, 10 ** 10, K)
  rates = timing.uplink_rate(rs.uniform(0.1, 1, K))
  time = np.zeros(K)

  def dispatch(i, now):
    time[i] = now
    for _ in range(E):
      time[i] += 2 * F_FULL / computing[i]         # model_process() twice per local epoch
    time[i] += M_FULL / rates[i]                    # transmit_model()

  order = rs.choice(range(K), C, replace=False)
  for i in order:
    dispatch(i, 0.0)
  epoch = count = 0
  current = 0.0
  while epoch != T:
    selected = min(order, key=lambda i: time[i])    # first minimum in `order`
    current = time[selected]
    count += 1
    if count == C:
      count, epoch = 0, epoch + 1
    index = int(np.where(order == selected)[0][0])
    order[index] = rs.choice(list(set(range(K)) - set(order)))
    dispatch(order[index], current)
  return current


def gas_jax_clock(seed, K, C, E, T):
  profiles = timing.draw_profiles(K, seed)
  tm = timing.TimeModel(profiles=profiles, client_flops=0, activation_bits=0,
                        client_model_bits=0, batch_size=32, full_flops=F_FULL,
                        full_model_bits=M_FULL)
  clock = fl_runner.AsyncClock(tm, K, C, E, fl_runner.selection_rng(seed))
  for _ in range(T * C):
    s, _ = clock.next_arrival()
    clock.replace(s)
  return clock.t_now


def main(argv):
  del argv
  args = (_K.value, _C.value, _E.value, _T.value)
  for name, fn in (("REF", ref_clock), ("gas-jax", gas_jax_clock)):
    t = np.array([fn(s, *args) for s in range(_SEEDS.value)])
    print(f"{name:8s} clock at T={_T.value}: mean {t.mean():.1f} s, std over seeds {t.std():.1f} s"
          f" (a 3-seed mean: std {t.std() / np.sqrt(3):.1f} s), seeds 0,1,2: "
          + ", ".join(f"{x:.1f}" for x in t[:3]))


if __name__ == "__main__":
  app.run(main)
