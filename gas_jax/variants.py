"""The paper as written, as one switch: `variant="paper"` (docs/paper_as_written.md).

REF (the authors' code, spec §1) stays the default, `variant="ref"`. `variant="paper"` turns on
every choice the paper writes down where REF does something else (spec §6), each of which is
also a config field of its own (`AS_WRITTEN`). `resolve` runs once, before validation
(`train.train_and_evaluate`), and writes the concrete fields into the config, so config.json
shows them and the run's identity (`gas_jax.workdir`) is the resolved config.

Conflicts: a field the user set to something other than its REF value keeps the user's value
(the explicit override wins, e.g. `--config.variant=paper --config.weighting.fn=exp`); a field
still at its REF value is taken as not set and gets the paper's value. (So the REF value of one
field cannot be kept inside the switch: for that, set the other fields one by one.)
"""
from typing import Dict

from gas_jax.errors import ConfigError

REF, PAPER = "ref", "paper"
VARIANTS = (REF, PAPER)

# field -> (REF's value, the paper's value, where the paper writes it).
AS_WRITTEN = {
    "weighting.fn": ("ref", "linear",
                     "s(n) = n, n = tE + e (Generative Activation-Aided Updates; Implementation "
                     "Details)"),
    "clients.aggregation": ("uniform", "data_size", "eq. (9)-(10): |D_k|-weighted"),
    "stats.jitter": (1e-5, 0.0, "eq. (12): no jitter"),
    "stats.gen_balance": ("topup", "equal",
                          "\"ensure that each label has an equal amount of data\""),
    "time.placement": ("radius", "area",
                       "\"clients randomly and uniformly distributed within the cell\""),
    "time.uplink": ("full", "shared",
                    "\"orthogonal uplink channel access with a total bandwidth W\""),
}


def _check(variant) -> None:
  if variant not in VARIANTS:
    raise ConfigError(f"variant={variant!r} is invalid: allowed: {', '.join(VARIANTS)}")


def _same(a, b) -> bool:
  return isinstance(a, bool) == isinstance(b, bool) and a == b


def resolved_values(get) -> Dict[str, object]:
  """{field: value} the switch sets, given get(field) -> the config's value (None: absent)."""
  variant = get("variant")
  if variant is None:
    return {}
  _check(variant)
  if variant == REF:
    return {}
  out = {}
  for field, (ref, paper, _) in AS_WRITTEN.items():
    value = get(field)
    if value is None or _same(value, ref):
      out[field] = paper
  return out


def resolve(config):
  """A copy of the ConfigDict `config` with the switch's fields set (the same config for
  `variant="ref"`); raises ConfigError (one line) for an unknown variant."""
  def get(field):
    node = config
    for part in field.split("."):
      if part not in node:
        return None
      node = node[part]
    return node

  values = resolved_values(get)
  if not values:
    return config
  out = config.copy_and_resolve_references()
  with out.unlocked():
    for field, value in values.items():
      section, name = field.rsplit(".", 1)
      out[section][name] = value
  return out


def resolve_dict(d: Dict) -> Dict:
  """The same on a nested dict (a stored config.json or `config.to_dict()`); a new dict."""
  def get(field):
    node = d
    for part in field.split("."):
      if not isinstance(node, dict) or part not in node:
        return None
      node = node[part]
    return node

  try:
    values = resolved_values(get)
  except ConfigError:
    return d          # an unknown variant: validation says so; the dict is compared as it is
  if not values:
    return d
  out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
  for field, value in values.items():
    section, name = field.rsplit(".", 1)
    out.setdefault(section, {})[name] = value
  return out
