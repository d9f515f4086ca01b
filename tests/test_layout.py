"""The package's shape (DESIGN.md): no import circle, no module too long to read.

Edges are the explicit `import` / `from ... import` statements of each module, at any depth
(a lazy import inside a function is a dependency too: the circle datasets.masks -> explain CLI
-> train -> datasets.masks was one). A submodule's implicit import of its own package's
`__init__` is not an edge: every Python submodule has it.
"""
import ast
import os

from conftest import REPO

PKG = "domainbed_align"
MAX_LINES = 500


def package_modules(root: str = REPO) -> dict:
    """Dotted module name -> file path, for every module of the package."""
    out = {}
    for folder, _, files in os.walk(os.path.join(root, PKG)):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def import_graph(modules: dict) -> dict:
    """Module -> the package modules it imports (the most specific one each statement names)."""
    def resolve(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                deps |= {resolve(a.name) for a in node.names if a.name.startswith(PKG)}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = mod.split(".")
                    keep = len(parts) - node.level + (1 if path.endswith("__init__.py") else 0)
                    base = ".".join(parts[:keep] + ([base] if base else []))
                if base.split(".")[0] != PKG:
                    continue
                for a in node.names:
                    full = f"{base}.{a.name}"
                    deps.add(full if full in modules else resolve(base))
        graph[mod] = deps - {mod, None}
    return graph


def cycles(graph: dict) -> list:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_cycle_finder_on_hand_made_graphs():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_import_graph_reads_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / PKG
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "a.py").write_text("def f():\n    from domainbed_align.sub.b import x\n")
    (pkg / "sub" / "b.py").write_text("from ..a import f\nimport os\n")
    graph = import_graph(package_modules(str(tmp_path)))
    assert graph[f"{PKG}.a"] == {f"{PKG}.sub.b"}
    assert graph[f"{PKG}.sub.b"] == {f"{PKG}.a"}
    assert graph[f"{PKG}.sub"] == {f"{PKG}.sub.b"}
    assert cycles(graph) == [[f"{PKG}.a", f"{PKG}.sub.b"]]


def test_no_import_circle_in_the_package():
    found = cycles(import_graph(package_modules()))
    assert found == [], "modules that import each other (directly or around a loop): " + \
        "; ".join(" <-> ".join(c) for c in found)


def test_no_module_too_long():
    too_long = []
    for path in package_modules().values():
        rel = os.path.relpath(path, REPO).replace(os.sep, "/")
        with open(path, encoding="utf-8") as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            too_long.append(f"{rel} ({n} lines)")
    assert too_long == [], "split these modules by concept: " + ", ".join(too_long)


# The report package's floors, bottom first (its __init__ docstring): each module imports only
# report modules on a lower floor.
REPORT_FLOORS = ["names", "cache", "records", "selected", "comparisons", "tables", "grid", "draw",
                 "figures", "saliency", "curves", "runs", "html"]


def test_report_modules_import_downward_only():
    modules = package_modules()
    report = sorted(m.rsplit(".", 1)[1] for m in modules if m.startswith(f"{PKG}.report."))
    assert report == sorted(REPORT_FLOORS), "place a new report module on a floor here"
    graph = import_graph(modules)
    upward = []
    for k, name in enumerate(REPORT_FLOORS):
        for dep in graph[f"{PKG}.report.{name}"]:
            if dep.startswith(f"{PKG}.report.") and \
                    REPORT_FLOORS.index(dep.rsplit(".", 1)[1]) >= k:
                upward.append(f"{name} -> {dep}")
            assert dep.split(".")[1] not in ("collect_results", "figures", "train", "sweep"), \
                f"report.{name} imports the script {dep}"
    assert upward == [], upward
