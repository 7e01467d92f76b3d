"""The package's layers (docs/architecture.md, "Layers"), checked on the source.

Every module is parsed with ast: no import cycle among the project's modules, no
module importing a layer above its own, and imports at module level only, except
optional dependencies, which load lazily where they are used.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "powerfusion"

# lowest first; a module may import its own layer or a lower one. A name is a module or
# a package (everything under it); the longest name that matches a module decides.
LAYERS = [
    ["errors", "dtypes", "options", "benchmarking"],   # base
    ["gir.expr"],           # index arithmetic: shapes and views use it as loops do
    ["graph"],              # the tensor graph, partitioned into kernels
    ["search.schedule"],    # a point of a kernel's search space: what lowering is told
    ["gir"],                # GIR, lowering, the interpreter
    ["targets"],            # devices as data
    ["passes"],
    ["codegen"],
    ["runtime"],            # compile, load, launch, measure
    ["search"],             # the candidates, the cost model, the tuner
    ["report"],
    ["compiler"],           # the stages strung together
    ["frontend"],           # tracing, torch and ONNX to the graph
    ["api"],                # pf.jit, pf.explain
    ["onnx", "frontend.onnx_model", "frontend.onnx_backend", "advise"],   # built on pf.jit
    ["__init__", "__main__", "cli"],
]

# what may be imported inside a function: dependencies a user may not have installed
# (and the project's modules that load one), and a slow standard-library lookup
OPTIONAL = ("torch", "functorch", "onnx", "onnxruntime", "pyopencl", "cuda", "matplotlib",
            "ray")
SLOW = ("importlib.metadata",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    return {_module_name(p): (p, ast.parse(p.read_text(), str(p)))
            for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Full names node imports: for `from X import y`, X.y where that is a module."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        package = parts if is_package else parts[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def _graph(modules) -> dict[str, set[str]]:
    """module -> the project's modules it imports (the most specific name that is one)."""
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for module, (path, tree) in modules.items():
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = _imported(node, module, path.name == "__init__.py")
            known = [n for n in names if n in modules]
            # `from . import x` names the package and x: the edge is to x
            targets = [n for n in known if not any(k.startswith(n + ".") for k in known)]
            edges[module].update(t for t in targets if t != module)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _layer(module: str) -> int:
    rest = module.split(".", 1)[1] if "." in module else "__init__"
    matches = [(len(name), k) for k, names in enumerate(LAYERS) for name in names
               if rest == name or rest.startswith(name + ".")]
    assert matches, f"{module} is in no layer: add it to LAYERS"
    return max(matches)[1]


def _in_function_imports(tree: ast.Module):
    """(function, import statement) for every import inside a def or class body."""
    def visit(node, scope):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and scope:
                yield scope, child
            inner = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            yield from visit(child, child.name if inner else scope)
    yield from visit(tree, None)


def _optional(node: ast.Import | ast.ImportFrom, allowed=OPTIONAL) -> bool:
    """Does node import only packages in allowed (optional dependencies)?"""
    if isinstance(node, ast.ImportFrom):
        names = [node.module] if node.level == 0 and node.module else []
    else:
        names = [a.name for a in node.names]
    return bool(names) and all(any(n == o or n.startswith(o + ".") for o in allowed)
                               for n in names)


def _needing_optional(modules) -> set[str]:
    """Project modules that import an optional dependency as they load, directly or
    through the project modules they load at module level."""
    loads: dict[str, set[str]] = {}
    needing = set()
    for module, (path, tree) in modules.items():
        inner = {id(node) for _, node in _in_function_imports(tree)}
        top = [n for n in ast.walk(tree)
               if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in inner]
        loads[module] = {name for n in top for name in
                         _imported(n, module, path.name == "__init__.py") if name in modules}
        if any(_optional(n) for n in top):
            needing.add(module)
    while True:
        more = {m for m, deps in loads.items() if deps & needing} - needing
        if not more:
            return needing
        needing |= more


def test_no_import_cycle():
    cycles = _cycles(_graph(_modules()))
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_module_imports_a_higher_layer():
    wrong = [f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
             for m, deps in _graph(_modules()).items() for d in sorted(deps)
             if _layer(d) > _layer(m)]
    assert not wrong, "\n".join(wrong)


def test_imports_at_module_level_except_optional_dependencies():
    modules = _modules()
    needing = _needing_optional(modules)

    def lazy_is_fine(module: str, node) -> bool:
        names = _imported(node, module, modules[module][0].name == "__init__.py")
        return _optional(node, OPTIONAL + SLOW) or any(n in needing for n in names)

    wrong = [f"{m}: {fn}: {ast.unparse(node)}" for m, (_, tree) in modules.items()
             for fn, node in _in_function_imports(tree) if not lazy_is_fine(m, node)]
    assert not wrong, f"{len(wrong)} imports inside functions:\n" + "\n".join(wrong)


def test_every_module_has_a_layer():
    for module in _modules():
        _layer(module)


def test_the_checker_finds_a_cycle_and_a_lazy_import():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    import torch\n    from .x import y\n")
    assert [_optional(n) for _, n in _in_function_imports(tree)] == [True, False]
    # the longest name decides: a schedule is below lowering, the search above the runtime
    layer = {m: _layer(f"powerfusion.{m}") for m in
             ("search.schedule", "gir.lower", "runtime.cpu", "search.space")}
    assert layer["search.schedule"] < layer["gir.lower"] < layer["runtime.cpu"] \
        < layer["search.space"]
