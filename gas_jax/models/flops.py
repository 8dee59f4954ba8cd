"""Multiply-accumulate and parameter counting from traced jaxprs (fvcore conventions).

fvcore counts one "flop" per multiply-accumulate of convolutions and matrix
products and ignores pooling, activations and bias additions. ``count_macs``
reproduces that on a jaxpr: it sums the MACs of every ``conv_general_dilated``
and ``dot_general`` equation, recursing into sub-jaxprs (pjit, custom_jvp,
custom_vjp, closed_call, remat, cond, scan, ...). The count is for the batch
the function was traced with.
"""
import math
from typing import Any

import jax


def _is_jaxpr(obj) -> bool:
  return hasattr(obj, "eqns") and hasattr(obj, "invars")


def _as_jaxpr(obj):
  """Returns the open Jaxpr of a Jaxpr / ClosedJaxpr, or None."""
  if _is_jaxpr(obj):
    return obj
  inner = getattr(obj, "jaxpr", None)
  if inner is not None and _is_jaxpr(inner):
    return inner
  return None


def _conv_macs(eqn) -> int:
  out_shape = eqn.outvars[0].aval.shape
  rhs_shape = eqn.invars[1].aval.shape
  rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out_feat, in_feat, *spatial)
  # Each output element needs kh*kw*...*(cin/groups) MACs: the whole kernel
  # except its output-feature axis (the in-feature axis is already cin/groups).
  per_output = math.prod(rhs_shape) // rhs_shape[rhs_spec[0]]
  return math.prod(out_shape) * per_output


def _dot_macs(eqn) -> int:
  out_shape = eqn.outvars[0].aval.shape
  lhs_shape = eqn.invars[0].aval.shape
  (lhs_contract, _), _ = eqn.params["dimension_numbers"]
  contracted = math.prod(lhs_shape[d] for d in lhs_contract)
  return math.prod(out_shape) * contracted


def _sub_jaxprs(value):
  """Yields the jaxprs found in an equation parameter (possibly a sequence)."""
  if isinstance(value, (list, tuple)):
    for item in value:
      yield from _sub_jaxprs(item)
    return
  jaxpr = _as_jaxpr(value)
  if jaxpr is not None:
    yield jaxpr


def _jaxpr_macs(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      total += _conv_macs(eqn)
    elif name == "dot_general":
      total += _dot_macs(eqn)
    elif name == "cond":
      # Only one branch runs; count the most expensive one.
      total += max((_jaxpr_macs(j) for j in _sub_jaxprs(eqn.params["branches"])), default=0)
    else:
      sub = sum(_jaxpr_macs(j) for v in eqn.params.values() for j in _sub_jaxprs(v))
      if name == "scan":
        sub *= int(eqn.params.get("length", 1))
      total += sub
  return total


def count_macs(fn, *example_args) -> int:
  """Counts the multiply-accumulates of ``fn(*example_args)`` as fvcore does.

  Args:
    fn: a JAX-traceable function.
    *example_args: arrays or ``jax.ShapeDtypeStruct``s fixing the traced shapes
      (pytrees allowed). Nothing is executed; the function is only traced.

  Returns:
    Total MACs of all convolutions and dot products for this batch.
  """
  closed = jax.make_jaxpr(fn)(*example_args)
  return int(_jaxpr_macs(closed.jaxpr))


def count_params(params: Any) -> int:
  """Total number of scalar entries over all leaves of a pytree (arrays or shape structs)."""
  return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))
