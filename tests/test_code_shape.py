"""Code shape (ARCHITECTURE.md "Layers"): no function over 60 lines outside tests and benchmarks; no import inside
a function except optional heavy backends; every import between pwdeploy's modules goes down the stated layers.

The import graph (module names, module-level edges) is read by tests/test_import_cycles.py; this file reuses it.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import test_import_cycles as import_graph

from pwdeploy.package import DEVICE_CODE

ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 60

# The only modules a function may import: optional extras (pwdeploy[timm], pwdeploy[tensorrt]) and CUDA bindings
# that exist only on GPU machines, so importing them at module level would break every machine without them.
OPTIONAL_BACKENDS = frozenset({"tensorrt", "polygraphy", "timm", "pycuda", "cuda"})
# ONNX Runtime, onnx and torch are host dependencies, but a device may lack them (TensorRT-only, no PyTorch): the
# code shipped in bundles (pwdeploy.package.DEVICE_CODE) may import them inside a function.
DEVICE_OPTIONAL = frozenset({"onnxruntime", "onnx", "torch"})
# The CLI starts, and `pwdeploy verify` runs, without torch and onnx (tests/test_registries.py, test_verify.py) and
# without paying for matplotlib: the modules `pwdeploy.cli` imports at start-up may import these, and pwdeploy's
# modules outside that start-up set, inside the function that needs them.
HEAVY = frozenset({"torch", "torchvision", "torch_pruning", "onnx", "onnxruntime", "onnxconverter_common",
                   "onnxscript", "matplotlib"})

# TEMPORARY exemptions, (file, function): offenders in files whose owners are rewriting them at the time this test
# was written. Remove an entry when its function is fixed (test_temporary_exemptions_are_still_needed says which);
# never add one for new code.
TEMPORARY_LONG_FUNCTIONS = frozenset({
})
TEMPORARY_FUNCTION_IMPORTS = frozenset({
    ("pwdeploy/device/__main__.py", "_verify"),
    ("pwdeploy/run_groups.py", "gdro_group_counts"),
    ("pwdeploy/run_groups.py", "prune_in_rounds"),
    ("pwdeploy/runners/__init__.py", "create_runner"),
    ("pwdeploy/runners/torch_runner.py", "TorchRunner.__init__"),
    ("pwdeploy/trajectory.py", "check_rounds"),
    ("pwdeploy/trajectory.py", "plot_curve"),
    ("pwdeploy/verification_set.py", "VerificationSet.predictions"),
    ("pwdeploy/verify.py", "_from_dataset"),
})

# ARCHITECTURE.md "Layers", bottom first (module names without the leading "pwdeploy."; shell patterns). A module
# imports modules of its own layer or of layers below it, never above; within a layer, test_import_cycles.py
# keeps the imports acyclic.
LAYERS = (
    ("base", ("pwdeploy", "errors", "names", "fsutil", "cache_dirs", "progress", "timings", "registry", "fastpath",
              "bootstrap")),
    ("core", ("schema", "metrics", "gate", "evaluate", "sampling", "verification_set", "manifest", "signature", "safe_extract",
              "runners", "runners.*", "latency_core", "latency_gate", "preprocessing", "config", "validate",
              "targets", "records", "rundir", "report", "recipes_report", "outputs")),
    ("device", ("device", "device.*", "anchor")),
    ("data and models", ("data", "data.*", "models", "models.*", "distributed", "precision")),
    ("export and calibration", ("exporters", "exporters.*", "calibration", "calibration.*")),
    ("pruning and training", ("prune", "prune.*", "loss", "recipes", "train", "selection", "pseudo_groups",
                              "run_groups", "trajectory", "speed", "latency", "latency.*")),
    ("stages", ("api", "verify", "verify_speed", "package", "ship", "fleet", "fleet_*", "demo")),
    ("command line", ("cli", "cli_*", "__main__")),
)


def _sources() -> dict[str, Path]:
    """Repository-relative path -> file, for every Python file outside tests and benchmarks."""
    files = [path for path in import_graph._modules().values()] + sorted((ROOT / "docs").rglob("*.py"))
    return {path.relative_to(ROOT).as_posix(): path for path in files}


def _functions(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    """(qualified name, node) of every function: methods as ``Class.method``, nested ones as ``outer.inner``."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((prefix + child.name, child))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def _own_imports(function: ast.AST) -> list[ast.AST]:
    """Import statements that run when ``function`` runs (those of functions nested in it are theirs)."""
    found, todo = [], list(ast.iter_child_nodes(function))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))
    return found


def _imported(node: ast.AST) -> list[str]:
    """Absolute names an import statement loads (a relative import starts with '.', resolved by ``_resolve``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = "." * node.level + (node.module or "")
    return [base] if node.module else [base + alias.name for alias in node.names]  # from . import x: module x


def _resolve(name: str, module: str, is_package: bool) -> str:
    """``name`` as imported in ``module`` -> the installed module name (relative names resolved, exporters/ and
    calibration/ as pwdeploy.exporters / pwdeploy.calibration)."""
    if not name.startswith("."):
        return import_graph._canonical(name)
    level = len(name) - len(name.lstrip("."))
    base = module if is_package else module.rpartition(".")[0]
    for _ in range(level - 1):
        base = base.rpartition(".")[0]
    rest = name[level:]
    return f"{base}.{rest}" if rest else base


def long_functions(source: str) -> list[tuple[str, int, int]]:
    """(name, line, length) of the functions of ``source`` longer than MAX_FUNCTION_LINES (def to last line)."""
    return [(name, node.lineno, node.end_lineno - node.lineno + 1) for name, node in _functions(ast.parse(source))
            if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def function_imports(source: str) -> list[tuple[str, int, str]]:
    """(function, line, imported name) of each import inside a function of ``source``."""
    return sorted((name, node.lineno, imported) for name, function in _functions(ast.parse(source))
                  for node in _own_imports(function) for imported in _imported(node))


def _start_up() -> set[str]:
    """Modules ``import pwdeploy.cli`` loads (module-level imports, followed)."""
    modules = import_graph._modules()
    seen, todo = set(), ["pwdeploy.cli"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += import_graph._edges(name, modules[name], modules)
    return seen


def allowed_in_function(imported: str, *, device_code: bool, start_up: bool, start_up_modules: set) -> bool:
    """May a function import ``imported`` (an installed module name)? See OPTIONAL_BACKENDS, DEVICE_OPTIONAL,
    HEAVY."""
    root = imported.split(".")[0]
    if root in OPTIONAL_BACKENDS or (device_code and root in DEVICE_OPTIONAL):
        return True
    if not start_up:
        return False
    return root in HEAVY or (root == "pwdeploy" and imported not in start_up_modules)


def _offenders() -> tuple[dict, dict]:
    """{(file, function): where} for long functions and for imports inside functions, exemptions included."""
    long, imports = {}, {}
    module_of = {path: name for name, path in import_graph._modules().items()}
    start_up = _start_up()
    for rel, path in _sources().items():
        source, module = path.read_text(), module_of.get(path, "")
        for name, line, length in long_functions(source):
            long[(rel, name)] = f"{rel}:{line} {name} ({length} lines)"
        for name, line, imported in function_imports(source):
            if name == "__getattr__":  # a package's lazy attributes (PEP 562): loading on first use is its job
                continue
            imported = _resolve(imported, module, path.name == "__init__.py")
            if not allowed_in_function(imported, device_code=rel in DEVICE_CODE, start_up=module in start_up,
                                       start_up_modules=start_up):
                imports.setdefault((rel, name), f"{rel}:{line} {name} imports {imported}")
    return long, imports


def test_no_function_over_60_lines():
    long, _ = _offenders()
    new = sorted(where for key, where in long.items() if key not in TEMPORARY_LONG_FUNCTIONS)
    assert not new, f"functions over {MAX_FUNCTION_LINES} lines (split them into steps with names): {new}"


def test_no_import_inside_a_function_except_optional_backends():
    _, imports = _offenders()
    new = sorted(where for key, where in imports.items() if key not in TEMPORARY_FUNCTION_IMPORTS)
    assert not new, ("imports inside functions: move them to the top of the module (an import cycle is fixed by "
                     f"moving the shared piece to the lower layer; see ARCHITECTURE.md, Layers): {new}")


def test_temporary_exemptions_are_still_needed():
    long, imports = _offenders()
    fixed = sorted(TEMPORARY_LONG_FUNCTIONS - set(long)) + sorted(TEMPORARY_FUNCTION_IMPORTS - set(imports))
    assert not fixed, f"fixed (or renamed): remove from the TEMPORARY_ lists of this file: {fixed}"


def _layer_of(module: str) -> int | None:
    short = module.removeprefix("pwdeploy.") if module != "pwdeploy" else module
    for index, (_name, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(short, pattern) for pattern in patterns):
            return index
    return None


def test_every_module_has_a_layer():
    unplaced = sorted(name for name in import_graph._modules() if _layer_of(name) is None)
    assert not unplaced, f"put these modules in a layer (LAYERS here and ARCHITECTURE.md, Layers): {unplaced}"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Edges of ``graph`` (module -> modules it imports) that go to a higher layer."""
    upward = []
    for name in sorted(graph):
        for target in sorted(graph[name]):
            low, high = _layer_of(name), _layer_of(target)
            if low is not None and high is not None and high > low:
                upward.append(f"{name} ({LAYERS[low][0]}) imports {target} ({LAYERS[high][0]})")
    return upward


def test_imports_go_down_the_layers():
    modules = import_graph._modules()
    upward = upward_imports({name: import_graph._edges(name, path, modules) for name, path in modules.items()})
    assert not upward, ("imports up the layers (move the shared piece down, or the importer up; ARCHITECTURE.md, "
                        f"Layers): {upward}")


def test_the_checks_find_what_they_should():
    inner = "def outer():\n    import json\n\n    def inner():\n        import timm\n        from . import x\n"
    assert function_imports(inner) == [("outer", 2, "json"), ("outer.inner", 5, "timm"), ("outer.inner", 6, ".x")]
    methods = "class A:\n    def f(self):\n        from ..b import c\n"
    assert function_imports(methods) == [("A.f", 3, "..b")]
    assert function_imports("import json\nif True:\n    import os\n") == []
    assert _resolve("..b", "pwdeploy.data.cache", False) == "pwdeploy.b"
    assert _resolve(".base", "pwdeploy.data", True) == "pwdeploy.data.base"
    light = {"pwdeploy.cli", "pwdeploy.errors"}
    rules = {"device_code": False, "start_up_modules": light}
    assert allowed_in_function("tensorrt", start_up=False, **rules)
    assert not allowed_in_function("torch", start_up=False, **rules)
    assert not allowed_in_function("onnxruntime", start_up=False, **rules)
    assert allowed_in_function("onnxruntime", start_up=False, device_code=True, start_up_modules=light)
    assert allowed_in_function("torch", start_up=True, **rules)
    assert allowed_in_function("pwdeploy.api", start_up=True, **rules)
    assert not allowed_in_function("pwdeploy.errors", start_up=True, **rules)
    assert not allowed_in_function("json", start_up=True, **rules)
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 1))
    assert long_functions(f"def fits():\n{body}\n") == []
    assert long_functions(f"def too_long():\n{body}\n    return x0\n") == [("too_long", 1, MAX_FUNCTION_LINES + 1)]
    assert _layer_of("pwdeploy.errors") == 0 and _layer_of("pwdeploy.cli") == len(LAYERS) - 1
    assert _layer_of("pwdeploy.exporters.targets") < _layer_of("pwdeploy.api")
    assert upward_imports({"pwdeploy.errors": {"pwdeploy.cli"}, "pwdeploy.cli": {"pwdeploy.errors"}}) == [
        "pwdeploy.errors (base) imports pwdeploy.cli (command line)"]
