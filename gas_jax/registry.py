"""Name -> plugin registries (models, datasets, algorithms), picked from the config by name.

A plugin registers itself with a decorator in its own module (`@ALGORITHMS.register("gas")`).
Each registry names the package whose import registers its built-in plugins, and imports it on
the first lookup, so nothing has to import every plugin up front and the registry itself depends
on no plugin (no import cycle: the plugins import the registry, never the other way round).
"""
import importlib
from typing import Callable, Dict, TypeVar

from gas_jax.errors import ConfigError

T = TypeVar("T")


class Registry:
  """A named table of builders. `get` fails with the config field, the value and what is allowed."""

  def __init__(self, field: str, plugins: str):
    self.field, self.plugins = field, plugins
    self._table: Dict[str, Callable] = {}
    self._loaded = False

  def _load(self) -> None:
    """Imports the plugin package once (a failed import raises, and is retried next time;
    the package's own modules re-entering here see it in sys.modules)."""
    if not self._loaded:
      importlib.import_module(self.plugins)
      self._loaded = True

  def register(self, name: str) -> Callable[[T], T]:
    def deco(fn: T) -> T:
      if name in self._table:
        raise ValueError(f"{self.field}: {name!r} registered twice")
      self._table[name] = fn
      return fn
    return deco

  def names(self):
    self._load()
    return sorted(self._table)

  def __contains__(self, name: str) -> bool:
    self._load()
    return name in self._table

  def get(self, name: str) -> Callable:
    self._load()
    if name not in self._table:
      raise ConfigError(f"{self.field}={name!r} is unknown; allowed: {', '.join(self.names())}")
    return self._table[name]


MODELS = Registry("model.name", plugins="gas_jax.models")
DATASETS = Registry("data.name", plugins="gas_jax.data.sources")
ALGORITHMS = Registry("algorithm", plugins="gas_jax.runners")
