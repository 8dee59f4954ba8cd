"""Name -> plugin registries (models, datasets, algorithms), picked from the config by name."""
from typing import Callable, Dict, TypeVar

T = TypeVar("T")


class Registry:
  """A named table of builders. `get` fails with the config field, the value and what is allowed."""

  def __init__(self, field: str):
    self.field = field
    self._table: Dict[str, Callable] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def deco(fn: T) -> T:
      if name in self._table:
        raise ValueError(f"{self.field}: {name!r} registered twice")
      self._table[name] = fn
      return fn
    return deco

  def names(self):
    return sorted(self._table)

  def __contains__(self, name: str) -> bool:
    return name in self._table

  def get(self, name: str) -> Callable:
    if name not in self._table:
      raise ValueError(f"{self.field}={name!r} is unknown; allowed: {', '.join(self.names())}")
    return self._table[name]


MODELS = Registry("model.name")
DATASETS = Registry("data.name")
ALGORITHMS = Registry("algorithm")
