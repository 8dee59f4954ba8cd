"""Parsing of config arguments (`--config=configs/FILE.py:ARG`) shared by the experiment configs.

An argument is a list of tokens joined by ':' (e.g. "K50:shard2:cinic10"). Each token is
recognised by its form alone, so the order does not matter; each kind of token may appear at
most once, and anything unrecognised is a `ConfigError` naming the argument and the accepted
forms. Not itself a config file (the leading underscore keeps it out of tests/run/test_configs.py).
"""
import re
from typing import Any, Callable, Dict, NamedTuple

from gas_jax import config as config_lib
from gas_jax.config import ConfigError


class Token(NamedTuple):
  """One kind of token: the regular expression it must match in full, and its value."""
  pattern: str
  convert: Callable[[re.Match], Any]
  form: str            # shown in error messages, e.g. "E<int>"


def int_token(prefix: str) -> Token:
  """'<prefix><positive int>', e.g. 'E20' -> 20."""
  return Token(prefix + r"([1-9][0-9]*)", lambda m: int(m.group(1)), f"{prefix}<int>")


# shardN (N >= 1), dirALPHA (ALPHA > 0, decimal) or iid; the value is the token itself, applied
# with gas_jax.config.apply_partition_arg.
PARTITION = Token(r"shard[1-9][0-9]*|dir(?=[0-9.]*[1-9])(?:[0-9]+\.?[0-9]*|\.[0-9]+)|iid",
                  lambda m: m.group(0), "shard<int>|dir<alpha>|iid")


def choice_token(*names: str) -> Token:
  """One of a fixed set of words."""
  return Token("|".join(re.escape(n) for n in names), lambda m: m.group(0), "|".join(names))


def parse(arg: str, tokens: Dict[str, Token], where: str) -> Dict[str, Any]:
  """Splits `arg` on ':' and returns {kind: value} for the tokens present.

  Args:
    arg: the config argument ("" gives {}).
    tokens: kind -> Token accepted in the argument.
    where: the config file, for error messages.

  Returns:
    The value of every kind that occurs in `arg`.

  Raises:
    ConfigError: for an empty or unrecognised token, or a kind given twice.
  """
  out = {}
  if not arg:
    return out
  forms = ", ".join(t.form for t in tokens.values())
  for part in arg.split(":"):
    text = part.strip()
    for kind, token in tokens.items():
      m = re.fullmatch(token.pattern, text)
      if m:
        if kind in out:
          raise ConfigError(f"config argument {arg!r} of {where} gives {kind} twice")
        out[kind] = token.convert(m)
        break
    else:
      raise ConfigError(f"config argument {arg!r} of {where}: {part!r} is not one of the "
                        f"accepted tokens ({forms}), joined by ':'")
  return out


def apply_partition(config, token: str) -> None:
  """Sets data.partition/shards/alpha from a PARTITION token (already checked by `parse`)."""
  config_lib.apply_partition_arg(config, token)
