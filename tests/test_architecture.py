"""The package's shape: layers that import only downwards, and no import cycle among its modules.

Every `import` in `hf_instructmining/` counts: at module level, inside functions and under `TYPE_CHECKING`. A lazy
import still ties two modules together (a reader must know both; a refactor of one breaks the other), so a cycle
through one is a cycle. The layer table is the one in `docs/architecture.md` and the README's Development map.
"""

import ast
from collections import defaultdict
from pathlib import Path


PACKAGE = "hf_instructmining"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# Layer -> the top-level modules and subpackages in it. A module imports only from its own layer or a lower one.
LAYERS = {
    0: ["_version", "_json", "_env", "_malloc", "errors", "import_utils", "offline", "formats", "loading"],
    1: ["indicators"],
    2: ["rules"],
    3: ["scoring", "selection", "labeling", "fitting", "search", "summary", "search_result"],
    4: ["hub", "plots", "measurements", "scale"],
    5: ["cli", "__main__"],
    # The facade: `hf_instructmining/__init__.py` re-exports every public name, so nothing imports it.
    6: [""],
}
# The one import that goes up a layer: `QualityRule.push_to_hub`, a lazy facade users call on a rule (it forwards
# to `hub.push_rule_to_hub`). (importing module, imported module, function the import sits in)
ALLOWED_UPWARD = {(f"{PACKAGE}.rules.rule", f"{PACKAGE}.hub", "push_to_hub")}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package `__init__`)."""
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def _imports(modules) -> list[tuple[str, str, int, str | None]]:
    """Every import of one package module by another: (importer, imported, line, enclosing function or None)."""
    edges = []
    for name, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for scope, node in _walk(tree, None):
            for target in _targets(name, is_package, node, modules):
                if target != name:
                    edges.append((name, target, node.lineno, scope))
    return edges


def _walk(node, scope):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield scope, child
        inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else scope
        yield from _walk(child, inner)


def _targets(name: str, is_package: bool, node, modules) -> list[str]:
    if isinstance(node, ast.Import):
        candidates = [alias.name for alias in node.names]
    else:
        if node.level:
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            module = ".".join([*base, *([node.module] if node.module else [])])
        else:
            module = node.module
        # `from pkg import submodule` imports the submodule; `from module import name` the module.
        candidates = [
            f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module for alias in node.names
        ]
    targets = []
    for candidate in candidates:
        while candidate and candidate not in modules:
            candidate = candidate.rpartition(".")[0]
        if candidate and candidate.split(".")[0] == PACKAGE:
            targets.append(candidate)
    return sorted(set(targets))


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for layer, members in LAYERS.items():
        if top in members:
            return layer
    raise AssertionError(f"`{module}` is in no layer of tests/test_architecture.py: add `{top}` to `LAYERS`.")


def _cycles(modules, edges) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    graph = defaultdict(set)
    for importer, imported, _, _ in edges:
        graph[importer].add(imported)
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                components.append(sorted(component))

    for v in sorted(modules):
        if v not in index:
            visit(v)
    return components


def _edges_but_the_allowed_one():
    modules = _modules()
    edges = _imports(modules)
    return modules, [e for e in edges if (e[0], e[1], e[3]) not in ALLOWED_UPWARD]


def test_the_import_graph_is_read():
    modules, edges = _edges_but_the_allowed_one()
    # A lazy import and a TYPE_CHECKING import are both edges.
    assert (f"{PACKAGE}.labeling.runner", f"{PACKAGE}.labeling.parallel") in {(a, b) for a, b, *_ in edges}
    assert (f"{PACKAGE}.search.api", f"{PACKAGE}.labeling.store") in {(a, b) for a, b, *_ in edges}
    assert len(modules) > 60


def test_no_import_cycle():
    modules, edges = _edges_but_the_allowed_one()
    cycles = _cycles(modules, edges)
    details = [
        f"{cycle}: " + "; ".join(f"{a}:{line} -> {b}" for a, b, line, _ in edges if a in cycle and b in cycle)
        for cycle in cycles
    ]
    assert not cycles, "import cycles:\n" + "\n".join(details)


def test_every_import_stays_in_its_layer_or_goes_down():
    modules, edges = _edges_but_the_allowed_one()
    upward = [
        f"{a}:{line} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
        for a, b, line, _ in edges
        if _layer(b) > _layer(a)
    ]
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)
    assert all(_layer(m) is not None for m in modules)


def test_the_one_upward_import_is_the_rule_facade_and_it_is_lazy():
    edges = _imports(_modules())
    upward = {(a, b, scope) for a, b, _, scope in edges if _layer(b) > _layer(a)}
    assert upward == ALLOWED_UPWARD


def test_placement_code_imports_no_private_names():
    """`scale/` places work (GPUs, Ray tasks) and calls the code paths of the layers below: no private names."""
    private = []
    for path in (ROOT / "scale").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                module = node.module or ""
                names = [alias.name for alias in node.names]
                if any(part.startswith("_") for part in module.split(".")) or any(n.startswith("_") for n in names):
                    private.append(f"{path.name}:{node.lineno} from {'.' * node.level}{module} import {names}")
    assert not private, "scale/ imports private names:\n" + "\n".join(private)
