r"""Writes a small example availability trace (docs/scenarios.md), made here, not downloaded.

    python launch/make_trace.py --out=configs/traces/example.json [--clients=20 --horizon_s=60]
    python -m gas_jax.main --config=configs/digits.py --workdir=runs/trace \
        --config.system.availability=trace --config.system.trace=configs/traces/example.json

Every client alternates online periods of U(1, 6) simulated seconds and offline periods of
U(0.5, 3) s (starting online with probability 0.7) up to `horizon_s`, from numpy's generator
seeded with `seed`; after its last interval a client stays offline, so a run that outlives the
trace stops with one line. Format: {"clients": {"<client id>": [[start, end], ...], ...}}, or
a CSV `client,start,end` with one interval per line (`--out=....csv`).
"""
import json
import os

import numpy as np
from absl import app, flags

_OUT = flags.DEFINE_string("out", "configs/traces/example.json", "Trace file (.json or .csv).")
_CLIENTS = flags.DEFINE_integer("clients", 20, "Clients (clients.num of the runs).")
_HORIZON = flags.DEFINE_float("horizon_s", 60.0, "Simulated seconds the trace covers.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the draws.")


def make_trace(clients: int, horizon_s: float, seed: int) -> dict:
  rng = np.random.default_rng(seed)
  out = {}
  for k in range(clients):
    t, online, ivs = 0.0, rng.random() < 0.7, []
    while t < horizon_s:
      d = rng.uniform(1.0, 6.0) if online else rng.uniform(0.5, 3.0)
      if online:
        ivs.append([round(t, 3), round(min(t + d, horizon_s), 3)])
      t, online = t + d, not online
    out[str(k)] = ivs
  return {"clients": out}


def write(trace: dict, path: str) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    if path.endswith(".csv"):
      f.write("client,start,end\n")
      for k, ivs in trace["clients"].items():
        f.writelines(f"{k},{s},{e}\n" for s, e in ivs)
    else:
      lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in trace["clients"].items()]
      f.write('{"clients": {\n' + ",\n".join(lines) + "\n}}\n")


def main(argv):
  del argv
  write(make_trace(_CLIENTS.value, _HORIZON.value, _SEED.value), _OUT.value)
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
