"""The package's shape (issue 13), checked on the source with ``ast``.

- Layers: a module of ``src/gatelab`` imports only modules of its own layer or of a layer
  below (:data:`LAYERS`, lowest first, as in docs/architecture.md). Every import counts,
  those inside functions too (a lazy import is still a dependency), bar the package root
  ``gatelab`` and ``gatelab.__main__``, which sit above everything to re-export it.
  ``insight`` and ``interop`` share a layer but neither imports the other.
- No import cycle between modules: the graph of module-level and in-function imports
  (``if TYPE_CHECKING:`` blocks left out: they never run), ``from package import name``
  an edge to ``package.name`` where that is a module, else to the package.
- No module over :data:`MAX_MODULE_LINES` lines.
- No function or method over :data:`MAX_FUNCTION_LINES` lines (``def`` line to last line)
  unless its docstring says why in a sentence that starts with :data:`LONG_MARKER`, e.g.
  ``Over 80 lines on purpose: the kernel's 12 cases read best side by side.``

A failing check names every offender in its message.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "gatelab"

LAYERS = (
    ("gatelab.errors", "gatelab._version", "gatelab._config"),
    ("gatelab.nn",),
    ("gatelab.data",),
    ("gatelab.models",),
    ("gatelab.train",),
    ("gatelab.estimators",),
    ("gatelab.tasks",),
    ("gatelab.insight", "gatelab.interop"),
    ("gatelab.cli",),
)
ABOVE_ALL = ("gatelab", "gatelab.__main__")  # the root re-exports every layer
SIBLINGS = (("gatelab.insight", "gatelab.interop"),)  # one layer, neither imports the other
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
LONG_MARKER = "Over 80 lines"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    for level, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    if module in ABOVE_ALL:
        return len(LAYERS)
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(module: str, *, runtime_only: bool = False, source: str | None = None) -> set[str]:
    """The ``gatelab`` modules ``module`` imports (most specific module named); ``source``
    stands in for the module's file."""
    path = MODULES.get(module, PACKAGE / "__missing__.py")
    tree = ast.parse(source or path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if runtime_only and isinstance(node, ast.If) and _type_checking_only(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {name for name in found if name == "gatelab" or name.startswith("gatelab.")}


def resolve(name: str) -> str:
    """``name`` or the closest enclosing module that exists (``gatelab.nn.layers.LSTM``)."""
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def top(module: str) -> str:
    """``gatelab.insight.analysis`` -> ``gatelab.insight``."""
    return ".".join(module.split(".")[:2])


def upward_imports() -> list[str]:
    bad = []
    for module in MODULES:
        if module in ABOVE_ALL:
            continue
        for target in sorted(map(resolve, imports(module))):
            pair = (top(module), top(target))
            sibling = pair in SIBLINGS or pair[::-1] in SIBLINGS
            if layer_of(target) > layer_of(module) or sibling:
                bad.append(f"{module} -> {target}")
    return bad


def import_graph() -> dict[str, set[str]]:
    return {m: {resolve(t) for t in imports(m, runtime_only=True)} - {m} for m in MODULES}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def long_modules() -> list[str]:
    out = []
    for path in MODULES.values():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            out.append(f"{path.relative_to(PACKAGE)}: {n} lines")
    return sorted(out)


def long_functions() -> list[str]:
    out = []
    for path in MODULES.values():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            n = node.end_lineno - node.lineno + 1
            doc = ast.get_docstring(node) or ""
            reason = LONG_MARKER in " ".join(doc.split())
            if n > MAX_FUNCTION_LINES and not reason:
                out.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {n} lines")
    return sorted(out)


def test_the_checks_see_what_they_check():
    """The helpers find imports in functions, resolve names to modules, and count lines."""
    assert "gatelab.nn.layers" in MODULES and layer_of("gatelab.nn.layers") == 1
    assert layer_of("gatelab.cli.tasks") == len(LAYERS) - 1
    assert resolve("gatelab.nn.layers.LSTM") == "gatelab.nn.layers"
    assert "gatelab.nn.layers" in imports("gatelab")  # the root re-exports the layer
    lazy = "def f():\n    from gatelab.nn import layers\n    from . import heads\n"
    lazy += "if TYPE_CHECKING:\n    import gatelab.cli\n"
    assert imports("gatelab.models.x", source=lazy) == {
        "gatelab.nn.layers",
        "gatelab.models.heads",
        "gatelab.cli",
    }
    assert "gatelab.cli" not in imports("gatelab.models.x", source=lazy, runtime_only=True)
    every = {m: imports(m) for m in MODULES}
    assert sum(map(len, every.values())) > 2 * len(MODULES)  # the parser sees the imports
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("gatelab.nowhere")
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles(import_graph() | {"gatelab.errors": {"gatelab.cli.tasks"}})


def test_no_module_imports_a_layer_above_it():
    bad = upward_imports()
    assert not bad, "imports of a higher layer (or of a sibling):\n" + "\n".join(bad)


def test_no_import_cycle():
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_module_over_600_lines():
    bad = long_modules()
    assert not bad, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(bad)


def test_no_function_over_80_lines_without_a_reason():
    bad = long_functions()
    assert not bad, (
        f"functions over {MAX_FUNCTION_LINES} lines with no docstring line starting "
        f"{LONG_MARKER!r}:\n" + "\n".join(bad)
    )
