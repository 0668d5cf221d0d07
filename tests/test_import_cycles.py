"""No import cycles among pwdeploy's modules (module-level imports: what runs when a module is first imported).

Imports inside functions are not edges here; the rule for them is that only optional heavy backends
(tensorrt, CUDA, timm) are imported that way."""

from __future__ import annotations

import ast
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# source folder -> the package it installs as (exporters/ and calibration/ ship inside pwdeploy)
PACKAGES = {"pwdeploy": "pwdeploy", "exporters": "pwdeploy.exporters", "calibration": "pwdeploy.calibration"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for dirpath, _dirs, files in os.walk(ROOT / folder):  # links (pwdeploy/exporters -> ../exporters) not followed
            rel = Path(dirpath).relative_to(ROOT / folder)
            for name in files:
                if name.endswith(".py"):
                    parts = [package, *rel.parts] + ([] if name == "__init__.py" else [name[:-3]])
                    found[".".join(p for p in parts if p)] = Path(dirpath) / name
    return found


def _canonical(name: str) -> str:
    head, _, rest = name.partition(".")
    return PACKAGES[head] + ("." + rest if rest else "") if head in PACKAGES else name


def _module_level(body: list) -> list:
    """Import statements that run at import time: not in functions, not under ``if TYPE_CHECKING``."""
    out = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out += _module_level(node.orelse)
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.ClassDef, ast.For, ast.While)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []):
                    out += _module_level(child.body if isinstance(child, ast.ExceptHandler) else [child])
    return out


def _edges(name: str, path: Path, modules: dict) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in _module_level(ast.parse(path.read_text()).body):
        if isinstance(node, ast.Import):
            targets |= {_canonical(alias.name) for alias in node.names}
            continue
        base = package
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        base = _canonical(node.module) if node.level == 0 else ".".join(p for p in (base, node.module) if p)
        for alias in node.names:
            targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {t for t in targets if t in modules and t != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _edges(name, path, modules) for name, path in modules.items()}
    assert "pwdeploy.exporters.targets" in graph and "pwdeploy.prune.criteria" in graph
    assert not _cycles(graph), f"import cycles (module-level imports): {_cycles(graph)}"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_source_imports_the_old_top_level_names():
    """exporters/ and calibration/ are pwdeploy.exporters / pwdeploy.calibration; nothing imports them bare."""
    sources = [p for folder in ("pwdeploy", "exporters", "calibration", "tests", "benchmarks", "docs")
               for p in (ROOT / folder).rglob("*.py")]
    bare = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            bare += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                     if n.split(".")[0] in ("exporters", "calibration")]
    assert not bare, f"import pwdeploy.exporters / pwdeploy.calibration instead: {bare}"
