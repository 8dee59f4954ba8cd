"""Staleness columns of metrics.jsonl, one code path for all 7 methods (issue 28, item 3).

Two quantities, both counted in whole versions and EXCLUSIVE of the aggregation / update that
consumes the work (0 = nothing happened in between):

- model staleness of an aggregated client model / update: the global (client-side) model
  versions produced between the dispatch of the model it was trained from and the aggregation
  that includes it. Version v = the global model after v aggregations. GAS and gas_nogen: the
  model buffer of spec §1.3-1.4 (a client dispatched with theta_glob after t aggregations,
  `GasScheduler.joined`, whose upload is aggregated by aggregation t' + 1 has staleness t' - t).
  FedBuff / CA2FL (spec §2.2-2.3): the version the arriving client trained from; REF CA2FL's
  aliased slots train from the live global at arrival (spec §2.3), so their staleness is 0;
  `ca2fl.true_staleness=True` gives the genuine dispatch version. FedAvg, MiniBatch-SFL, S2FL:
  every client starts from the newest global in its round, so 0 by construction (C values).
- activation staleness of an activation minibatch (split methods): the server updates between
  the dispatch of the client model that produced it (its client's start from theta_glob) and
  the server update that merges it (spec §1.5: the one after the activation buffer holds C
  minibatches). GAS: U_merge - 1 - U_dispatch, U counted as in spec §1.1. MiniBatch-SFL / S2FL
  (spec §2.4-2.5): the activation of local iteration e = 1..E is merged by the round's e-th
  server update, so its staleness is e - 1 (a synchronous baseline: mean (E - 1) / 2). FedAvg,
  FedBuff, CA2FL have no activations: null columns.

Per row (one global iteration) the values are those of the models aggregated in that row and
of the activations merged by the server updates run in that row (an activation produced late
in an iteration may be merged in the next one). Columns (null when the row had none):
`model_staleness_mean`, `model_staleness_max`, `model_staleness_hist` and the same with
`activation_staleness_`; a histogram is {"<staleness>": count} with string keys in increasing
order (strict JSON), e.g. {"0": 3, "1": 7}; `merge_hists` sums several rows' histograms.
"""
from typing import Dict, Iterable, Optional, Sequence

KINDS = ("model", "activation")
STATS = ("mean", "max", "hist")
COLUMNS = tuple(f"{kind}_staleness_{stat}" for kind in KINDS for stat in STATS)


def histogram(values: Iterable[int]) -> Dict[str, int]:
  """{"<value>": count} in increasing order of value."""
  counts: Dict[int, int] = {}
  for v in values:
    counts[int(v)] = counts.get(int(v), 0) + 1
  return {str(v): counts[v] for v in sorted(counts)}


def merge_hists(hists: Iterable[Optional[Dict[str, int]]]) -> Dict[int, int]:
  """Sum of several rows' histograms (None skipped) as {int value: count}, sorted."""
  total: Dict[int, int] = {}
  for h in hists:
    for v, n in (h or {}).items():
      total[int(v)] = total.get(int(v), 0) + int(n)
  return dict(sorted(total.items()))


def _kind(values: Optional[Sequence[int]]) -> tuple:
  if values is None or len(values) == 0:
    return None, None, None
  vals = [int(v) for v in values]
  if min(vals) < 0:
    raise ValueError(f"staleness must be >= 0, got {min(vals)}")
  return float(sum(vals) / len(vals)), max(vals), histogram(vals)


def columns(model: Optional[Sequence[int]],
            activation: Optional[Sequence[int]] = None) -> Dict[str, object]:
  """The six row columns from one row's model and activation staleness values (None or empty:
  null columns)."""
  out = {}
  for kind, values in zip(KINDS, (model, activation)):
    for stat, v in zip(STATS, _kind(values)):
      out[f"{kind}_staleness_{stat}"] = v
  return out


def synchronous_model(participating: int) -> list:
  """Model staleness of a synchronous round: C clients, all from the newest global (0)."""
  return [0] * int(participating)
