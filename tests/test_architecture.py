"""The package's shape: no import cycles, no oversized modules (docs/architecture.md)."""
import ast
import os

from helpers.cli_runs import ROOT

PACKAGE = os.path.join(ROOT, "gas_jax")
MAX_LINES = 450


def _modules(root=PACKAGE):
  """module name -> path, for every .py file of the package."""
  out = {}
  for dirpath, _, files in os.walk(root):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(dirpath, f)
        name = os.path.relpath(path[:-3], ROOT).replace(os.sep, ".")
        out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
  return out


def import_graph(modules):
  """module -> the package modules it imports anywhere in its body (functions included)."""
  graph = {}
  for name, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    deps = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        deps.update(a.name for a in node.names)
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          parts = package.split(".")[:len(package.split(".")) - node.level + 1]
          base = ".".join(parts + ([base] if base else []))
        for a in node.names:
          full = f"{base}.{a.name}"
          deps.add(full if full in modules else base)
    graph[name] = sorted(d for d in deps if d in modules and d != name)
  return graph


def cycles(graph):
  """The strongly connected components with more than one module (Tarjan), and self-loops."""
  index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_cycle_finder_finds_cycles():
  """The checker itself: a two-module cycle and a three-module one are found, a chain is not."""
  assert cycles({"a": ["b"], "b": ["a"], "c": []}) == [["a", "b"]]
  assert cycles({"a": ["b"], "b": ["c"], "c": ["a"]}) == [["a", "b", "c"]]
  assert cycles({"a": ["b"], "b": ["c"], "c": []}) == []


def test_import_graph_sees_function_level_and_relative_imports(tmp_path):
  pkg = tmp_path / "gas_jax"
  (pkg / "sub").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "sub" / "__init__.py").write_text("from gas_jax.sub import b\n")
  (pkg / "a.py").write_text("def f():\n  from gas_jax.sub import b\n")
  (pkg / "sub" / "b.py").write_text("from .. import a\n")
  mods = {}
  for dirpath, _, files in os.walk(pkg):
    for f in files:
      path = os.path.join(dirpath, f)
      name = os.path.relpath(path[:-3], tmp_path).replace(os.sep, ".")
      mods[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
  graph = import_graph(mods)
  assert graph["gas_jax.a"] == ["gas_jax.sub.b"]
  assert graph["gas_jax.sub.b"] == ["gas_jax.a"]
  assert cycles(graph) == [["gas_jax.a", "gas_jax.sub.b"]]


def test_gas_jax_has_no_import_cycles():
  found = cycles(import_graph(_modules()))
  assert not found, f"import cycles: {found}"


def test_no_module_exceeds_the_line_limit():
  sizes = {name: sum(1 for _ in open(path)) for name, path in _modules().items()}
  big = {n: s for n, s in sizes.items() if s > MAX_LINES}
  assert not big, f"modules over {MAX_LINES} lines: {big}"
  assert sum(s <= 300 for s in sizes.values()) >= 0.8 * len(sizes)   # most stay under 300


def test_no_test_module_imports_another():
  """Shared test code lives in tests/helpers/, never in a test module."""
  tests_dir = os.path.join(ROOT, "tests")
  names = {f[:-3] for _, _, files in os.walk(tests_dir) for f in files
           if f.startswith("test_") and f.endswith(".py")}
  offenders = []
  for dirpath, _, files in os.walk(tests_dir):
    for f in files:
      if not f.endswith(".py"):
        continue
      path = os.path.join(dirpath, f)
      with open(path) as fh:
        tree = ast.parse(fh.read(), path)
      for node in ast.walk(tree):
        mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        offenders += [(f, m) for m in mods if m.split(".")[-1] in names]
  assert not offenders, offenders
