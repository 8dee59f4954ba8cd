"""The seeds' server-side calls on stacked states (a leading seed axis), for `SeedsGasRunner`:
one vmapped server update of every seed that is due, and one label's factor compression of one
seed in place.

The seeds reach their server updates together: each runs one after every C client steps, and
the runner advances every seed by one segment (its events up to its next server update or
aggregation) per tick. So one vmapped call serves all of them; a seed not due (it ended its
segment at an aggregation, or has finished) merges nothing and keeps its state.
"""
import jax
import jax.numpy as jnp

from gas_jax import engine
from gas_jax.stats import SqrtStats

tree_map = jax.tree_util.tree_map


def make_server_runner(algo):
  """jit(vmap(server update)): (servers [S], buffers [S], global_iters [S], keys [S], due [S],
  gen_rows=, room_made=) -> (servers, metrics [S]). A seed not due gets its buffer's rows
  masked out (and, with relative tags, its reference shifts zeroed, so nothing is rescaled), so
  its merge scatters nothing into its factor, and keeps its old state: every
  other leaf is selected, the factor's rows are taken as the (unchanged) merge left them,
  which spares a select over the whole factor (1.4 GB per seed for CIFAR-10)."""
  server = engine.server_event(algo)

  def one(ss, buf, it, key, due, gen_rows, room_made):
    buf = buf.replace(row_mask=buf.row_mask & due)
    if buf.tag_shift is not None:   # relative tags: no rescale of a seed that is not due
      buf = buf.replace(tag_shift=jnp.where(due, buf.tag_shift, 0.0))
    new, out = server(ss, buf, it, key, gen_rows, room_made)
    kept = tree_map(lambda n, o: jnp.where(due, n, o), new, ss)
    if isinstance(new.stats, SqrtStats) and room_made:
      kept = kept.replace(stats=kept.stats.replace(rows=new.stats.rows))
    return kept, out

  def run(servers, buffers, global_iters, keys, due, gen_rows=None, room_made=False):
    return jax.vmap(lambda *a: one(*a, gen_rows, room_made))(servers, buffers, global_iters,
                                                             keys, due)

  return jax.jit(run, donate_argnums=(0,), static_argnames=("gen_rows", "room_made"))


def make_compress_runner(algo):
  """jit: (servers [S], seed, label) -> servers with that seed's label compressed
  (`algo.compress`), in place: the statistics' seed and label axes are merged into one
  (a reshape, no copy) and label seed * M + label is compressed."""

  def run(servers, seed, label):
    st = servers.stats
    s, m = st.used.shape
    flat = tree_map(lambda a: a.reshape((s * m,) + a.shape[2:]), st)
    out = algo.compress(servers.replace(stats=flat), seed * m + label).stats
    return servers.replace(stats=tree_map(lambda a, b: a.reshape(b.shape), out, st))

  return jax.jit(run, donate_argnums=(0,))
