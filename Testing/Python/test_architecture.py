"""The library's shape: no import cycle among its modules, a lazy public API, torch only where it belongs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Set

LIB = Path(__file__).resolve().parents[2] / "LowDoseDenoise" / "LowDoseDenoiseLib"
PACKAGE = "LowDoseDenoiseLib"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> Optional[str]:
    """The absolute module an ``from X import ...`` names (relative imports resolved)."""
    if node.level == 0:
        return node.module
    base = current.split(".") if is_package else current.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> Dict[str, Set[str]]:
    """Module -> library modules it imports, at top level or inside functions (AST, every form)."""
    modules = {_module_name(p): p for p in LIB.rglob("*.py")}
    graph: Dict[str, Set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node)
                if base is None:
                    continue
                # `from . import data` imports the module `.data`; `from .x import f` imports `.x`
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                while target and target not in modules:  # a.b.c attribute -> the module a.b
                    target = target.rpartition(".")[0]
                if target and target.startswith(PACKAGE) and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One import cycle as a list of modules (first = last), or None."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if state.get(start) is None:
            found = visit(start)
            if found:
                return found
    return None


def test_the_graph_builder_sees_every_import_form():
    graph = import_graph()
    assert "LowDoseDenoiseLib.modelfile" in graph["LowDoseDenoiseLib.engine"]  # from .modelfile import ...
    assert "LowDoseDenoiseLib.training.data" in graph["LowDoseDenoiseLib.training.trainer"]  # from . import data
    assert "LowDoseDenoiseLib.engine" in graph["LowDoseDenoiseLib.quality.metrics"]  # inside a function
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_the_library_modules():
    # The package __init__ only names modules lazily (strings), so it is no edge here.
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _fresh_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=str(LIB.parent))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_importing_the_package_imports_no_torch_and_the_api_loads_on_use():
    out = _fresh_python(
        "import sys, LowDoseDenoiseLib as L\n"
        "print('torch' in sys.modules, sorted(L.__all__) == sorted(set(L.__all__)))\n"
        "from LowDoseDenoiseLib import denoise_volume, list_models, Volume\n"
        "print(callable(denoise_volume), callable(list_models), Volume.__name__)\n"
    )
    assert out.splitlines() == ["False True", "True True Volume"]


def test_torch_free_parts_do_not_import_torch():
    """io/, quality/, the model registry listing and the device menu without a GPU need no torch at import."""
    out = _fresh_python(
        "import sys\n"
        "import LowDoseDenoiseLib.engine, LowDoseDenoiseLib.modelfile, LowDoseDenoiseLib.quality.metrics\n"
        "import LowDoseDenoiseLib.quality.simulate, LowDoseDenoiseLib.io.imagefiles\n"
        "LowDoseDenoiseLib.modelfile.list_models()\n"
        "print('torch' in sys.modules)\n"
    )
    assert out == "False"


def test_every_public_name_exists():
    import LowDoseDenoiseLib
    from LowDoseDenoiseLib import engine, modelfile
    from LowDoseDenoiseLib.quality import metrics, noise

    for module in (LowDoseDenoiseLib, engine, modelfile, metrics, noise):
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert not missing, (module.__name__, missing)


def _top_level_names(tree: ast.Module) -> Set[str]:
    """Names a module defines or imports at top level (also under ``if``/``try``)."""
    names: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node in tree.body:
            names.add(node.name)
    for node in tree.body:
        for child in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in child.names)
            elif isinstance(child, ast.Assign):
                for target in child.targets:
                    elts = target.elts if isinstance(target, ast.Tuple) else [target]
                    names.update(e.id for e in elts if isinstance(e, ast.Name))
            elif isinstance(child, ast.AnnAssign) and isinstance(child.target, ast.Name):
                names.add(child.target.id)
            elif isinstance(child, (ast.FunctionDef, ast.ClassDef)):
                names.add(child.name)
    return names


def _declared_all(tree: ast.Module) -> Optional[ast.expr]:
    """The expression assigned to ``__all__`` at top level, or None."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return node.value
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "__all__":
            return node.value
    return None


def test_every_module_declares_all_and_it_names_what_exists():
    """Every library module (packages too) says what its public API is; every listed name is defined there,
    no name twice, and no private name is exported.  (The package's own lazy __all__ is checked by import
    in test_every_public_name_exists.)"""
    for path in sorted(LIB.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        value = _declared_all(tree)
        where = path.relative_to(LIB.parent)
        assert value is not None, f"{where} has no __all__"
        if _module_name(path) == PACKAGE:
            continue
        declared = list(ast.literal_eval(value))
        assert len(declared) == len(set(declared)), (where, "listed twice")
        missing = sorted(set(declared) - _top_level_names(tree))
        assert not missing, (where, missing)
        private = [n for n in declared if n.startswith("_") and not n.startswith("__")]
        assert not private, (where, "private names exported", private)


def test_no_private_name_is_imported_across_modules():
    """``from .x import _helper`` couples a module to another's internals: make the helper public instead."""
    found = []
    for path in sorted(LIB.rglob("*.py")):
        name = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node) or ""
                if base.startswith(PACKAGE):
                    found += [f"{path.relative_to(LIB.parent)}:{node.lineno} {base}.{a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, found
