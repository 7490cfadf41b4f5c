"""The shape of the code base, checked: who may import whom, no import cycles, small files.

Module-level imports only: an import inside a function is the project's way to
keep a slow dependency (the kubernetes client, pyroute2) off a path that does
not need it, and is read here as part of that function, not of the module.
"""
from __future__ import annotations

import ast
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("lowlevel", "cni", "conf", "proxyd", "krsim")
GENERATED = ("proxyd/routing/gobgp_api/",)
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60
# Who may import whom (a package always imports itself). The harness drives the
# product; the product never reaches into the harness; the CNI plugins and the
# daemon share only lowlevel, which imports nothing of ours and only the standard
# library (it is on the CNI hot path).
ALLOWED = {
    "lowlevel": set(),
    "cni": {"lowlevel"},
    "conf": {"lowlevel", "cni"},
    "proxyd": {"lowlevel"},
    "krsim": {"lowlevel", "cni", "conf", "proxyd"},
}


def product_files() -> list[pathlib.Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
                  if not any(str(p.relative_to(ROOT)).startswith(g) for g in GENERATED))


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: pathlib.Path, modules: set[str]) -> set[str]:
    """Modules of ours imported at module level: ``from x import y`` is x.y when that is
    a module, else x."""
    tree = ast.parse(path.read_text())
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in product_files()}
    return {name: {m for m in top_level_imports(path, set(files)) if m in files and m != name}
            for name, path in files.items()}


def test_packages_import_only_what_the_layering_allows():
    wrong = [f"{mod} imports {dep}" for mod, deps in graph().items() for dep in deps
             if dep.split(".")[0] != mod.split(".")[0]
             and dep.split(".")[0] not in ALLOWED[mod.split(".")[0]]]
    assert wrong == []


def test_lowlevel_uses_the_standard_library_only():
    third_party = []
    for path in (ROOT / "lowlevel").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            third_party += [f"{path.name}: {n}" for n in names if n and
                            n.split(".")[0] not in sys.stdlib_module_names | {"lowlevel"}]
    assert third_party == []


def test_no_import_cycles():
    edges, cycles = graph(), []
    state: dict[str, int] = {}          # 1: on the current path, 2: done

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for dep in sorted(edges.get(mod, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[mod] = 2

    for mod in sorted(edges):
        if mod not in state:
            visit(mod, [mod])
    assert cycles == []


@pytest.mark.parametrize("limit", ["file", "function"])
def test_files_and_functions_stay_small(limit):
    too_big = []
    for path in product_files():
        text = path.read_text()
        rel = path.relative_to(ROOT)
        if limit == "file" and len(text.splitlines()) > MAX_FILE_LINES:
            too_big.append(f"{rel}: {len(text.splitlines())} lines")
        if limit == "function":
            too_big += [f"{rel}:{n.lineno} {n.name}: {n.end_lineno - n.lineno + 1} lines"
                        for n in ast.walk(ast.parse(text))
                        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                        and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert too_big == []
