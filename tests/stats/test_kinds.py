"""The statistics kinds' dispatch table (`gas_jax.stats.KINDS`): every kind's state class is in
it, and the interface (merge, sample, compress, refresh, covariance) reaches each kind's
operations through it, for every kind a GAS config can choose (`stats.method` x
`stats.covariance`, low-rank included)."""
import dataclasses
import importlib
import inspect
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gas_jax.stats
from gas_jax import stats
from gas_jax.algorithms import gas
from gas_jax.algorithms.gas import generation

M, D, C, B = 3, 4, 2, 4
# Every statistics kind a config chooses: (stats.method, stats.covariance) -> state class.
CONFIG_KINDS = {
    ("sqrt", "full"): stats.SqrtStats,
    ("sqrt", "lowrank"): stats.SqrtStats,     # the square-root factor's truncation mode
    ("cholesky", "full"): stats.GaussianStats,
    ("sqrt", "diag"): stats.DiagStats,
}


def _init(method, covariance):
  hp = gas.GasHParams(participating=C, batch_size=B, num_classes=M, stats_method=method,
                      stats_covariance=covariance, stats_rank=2, stats_block=4)
  return generation.init_stats(hp, D), generation.merge_rank(hp)


def _state_classes():
  """Every class derived from `PerLabel` that a module of gas_jax.stats defines."""
  found = set()
  for info in pkgutil.iter_modules(gas_jax.stats.__path__):
    module = importlib.import_module(f"gas_jax.stats.{info.name}")
    for _, cls in inspect.getmembers(module, inspect.isclass):
      if issubclass(cls, stats.PerLabel) and cls is not stats.PerLabel:
        found.add(cls)
  return found


def test_every_state_class_has_a_table_line():
  classes = _state_classes()
  assert {stats.SqrtStats, stats.GaussianStats, stats.DiagStats} <= classes
  assert classes == set(stats.KINDS)
  for cls, kind in stats.KINDS.items():
    assert isinstance(kind, stats.Kind)
    for op in ("merge", "sample", "refresh", "covariance", "factored", "compress", "make_room"):
      assert callable(getattr(kind, op)), (cls, op)
  assert [k for k in stats.KINDS.values() if k.compressible] == [stats.KINDS[stats.SqrtStats]]


def test_unknown_state_is_refused():
  @dataclasses.dataclass
  class NotAKind(stats.PerLabel):
    mean: jax.Array

  with pytest.raises(TypeError, match="not a statistics kind"):
    stats.kind_of(NotAKind(jnp.zeros((M, D))))


@pytest.mark.parametrize("method,covariance", sorted(CONFIG_KINDS))
def test_interface_dispatches_through_the_table(method, covariance, monkeypatch):
  """Each interface call reaches the operation in the kind's table line (a spy put there is
  what runs), with the arguments it was given."""
  st, rank = _init(method, covariance)
  assert type(st) is CONFIG_KINDS[(method, covariance)]
  kind = stats.kind_of(st)
  calls = []

  def spy(name, fn):
    def run(*args, **kwargs):
      calls.append(name)
      return fn(*args, **kwargs)
    return run

  ops = ("merge", "sample", "compress", "refresh", "covariance", "make_room")
  monkeypatch.setitem(stats.KINDS, type(st), dataclasses.replace(
      kind, **{op: spy(op, getattr(kind, op)) for op in ops}))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(C * B, D)), jnp.float32)
  y = jnp.asarray(np.arange(C * B) % M, jnp.int32)
  w = jnp.ones((C * B,), jnp.float32)
  st = stats.make_room(st, y, w, block=4, rank=rank)
  st = stats.merge(st, x, y, w, block=4, rank=rank)
  st = stats.merge(st, x + 1.0, y, w, block=4, rank=rank)
  st, fallbacks = stats.refresh_factors(st, jnp.ones((M,), bool), report=True)
  samples = stats.sample(st, jax.random.key(0), 5, rows=jnp.full((M,), 5))
  cov = stats.covariance(st)
  st = stats.compress_label(st, 1, rank)
  assert calls == ["make_room", "merge", "merge", "refresh", "sample", "covariance", "compress"]
  assert samples.shape == (M, 5, D) and np.all(np.isfinite(np.asarray(samples)))
  assert cov.shape == (M, D, D) and int(fallbacks) == 0
  assert type(st) is CONFIG_KINDS[(method, covariance)]
  if kind.compressible:   # the compression ran: label 1's factor holds at most D (rank) rows
    assert int(st.used[1]) <= (rank or D)
