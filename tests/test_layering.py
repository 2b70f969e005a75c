"""The import layering the README states (Architecture): imports point down the layers and
form no cycle, imports inside functions included.

Every module of the package is parsed with `ast` (nothing is imported). A module may import
modules of its own layer and of the layers below it; the test files (tests/, hw_tests/test_*)
are not modules of the package and are left out.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"nnfpga": "nnfpga", "nnfpga.ir": "ir", "nnfpga.frontend": "frontend", "nnfpga.passes": "passes",
            "nnfpga.backends": "backends", "nnfpga.templates": "templates", "nnfpga.hw_tests": "hw_tests"}

LAYERS = [
    ("foundations", ["nnfpga.errors", "nnfpga.version", "nnfpga.processes", "nnfpga.hardware", "nnfpga.bitslices",
                     "nnfpga.devices",
                     "nnfpga.calibration", "nnfpga.templates", "nnfpga.limits"]),
    ("ir", ["nnfpga.ir"]),
    ("on the IR", ["nnfpga.frontend", "nnfpga.builddir", "nnfpga.sample_data"]),
    ("lowering", ["nnfpga.backends.rtl_layers", "nnfpga.backends.const_graph", "nnfpga.backends.stream_model", "nnfpga.backends.fifo_depth",
                  "nnfpga.backends.lower", "nnfpga.backends.stream_graph", "nnfpga.backends.stream_latency",
                  "nnfpga.backends.stream_sim"]),
    ("cost", ["nnfpga.cost_stream", "nnfpga.cost"]),
    ("passes", ["nnfpga.passes"]),
    ("emitters", ["nnfpga.backends"]),
    ("harness", ["nnfpga.hw_tests"]),
    ("driver", ["nnfpga.verify", "nnfpga.run", "nnfpga.build", "nnfpga.report", "nnfpga.commands", "nnfpga.cli",
                "nnfpga"]),
]
"""Lowest first. A module belongs to the entry naming it or its closest enclosing package."""


def package_modules() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            if folder == "hw_tests" and path.name.startswith("test_"):
                continue
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


MODULES = package_modules()


def layer_of(module: str) -> int:
    best, where = -1, None
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, where = len(name), index
    assert where is not None, f"{module} is in no layer of LAYERS; add it where it belongs"
    return where


def imports_of(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported module of the package, line, inside a function) for every import in `path`."""
    package = module if path.stem == "__init__" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [[a.name] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [[f"{base}.{a.name}", base] for a in node.names]  # a submodule, else its package
        else:
            continue
        for candidates in targets:
            target = next((c for c in candidates if c in MODULES), None)
            if target is not None and target != module:
                found.append((target, node.lineno, node.col_offset > 0))
    return found


GRAPH = {m: imports_of(m, p) for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_module_imports_a_higher_layer():
    wrong = sorted({f"{m} (layer '{LAYERS[layer_of(m)][0]}') imports {t} (layer '{LAYERS[layer_of(t)][0]}'), "
             f"line {line}{' inside a function' if inner else ''}"
             for m, edges in GRAPH.items() for t, line, inner in edges if layer_of(t) > layer_of(m)})
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_import_cycle():
    edges = {m: sorted({t for t, _, _ in e}) for m, e in GRAPH.items()}
    state: dict[str, str] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "open"
        for t in edges[m]:
            if state.get(t) == "open":
                cycles.append(" -> ".join(stack[stack.index(t):] + [m, t]) if t in stack else f"{m} -> {t}")
            elif t not in state:
                visit(t, stack + [m])
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _says_why(lines: list[str], line: int) -> bool:
    """Whether the import at `line` (1-based), or the comment above its block of imports, says why."""
    i = line - 1
    if "#" in lines[i]:
        return True
    while i > 0 and lines[i - 1].strip().startswith(("from ", "import ")):
        i -= 1
    return i > 0 and lines[i - 1].strip().startswith("#")


def test_imports_inside_functions_say_why():
    """An import of one of our modules inside a function must say why it is not at the top
    (only to keep a heavy dependency out of start-up, never to dodge a cycle)."""
    bare = set()
    for m, path in MODULES.items():
        lines = path.read_text().splitlines()
        for t, line, inner in GRAPH[m]:
            if inner and not _says_why(lines, line):
                bare.add(f"{m} line {line} imports {t} inside a function with no comment saying why")
    assert not bare, "\n".join(sorted(bare))


def test_the_foundations_import_nothing_of_ours_but_each_other():
    """nnfpga.hardware and the other foundations sit below everything: anything may import
    them and they import only one another (the cycle test keeps that acyclic)."""
    leaves = [m for m in MODULES if layer_of(m) == 0]
    assert "nnfpga.hardware" in leaves
    wrong = [f"{m} imports {t}" for m in leaves for t, _, _ in GRAPH[m] if t not in leaves]
    assert not wrong, "\n".join(wrong)
