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
# ONNX Runtime and onnx are host dependencies, but a TensorRT-only device may lack them: only the code shipped in
# bundles (pwdeploy.package.DEVICE_CODE) may import them inside a function.
DEVICE_OPTIONAL = frozenset({"onnxruntime", "onnx"})

# TEMPORARY exemptions, (file, function): offenders in files whose owners are rewriting them at the time this test
# was written. Remove an entry when its function is fixed (test_temporary_exemptions_are_still_needed says which);
# never add one for new code.
TEMPORARY_LONG_FUNCTIONS = frozenset({
    ("pwdeploy/cli.py", "compress"),
    ("pwdeploy/device/install.py", "install"),
    ("pwdeploy/device/verify.py", "verify_bundle"),
    ("pwdeploy/package.py", "package_run"),
    ("pwdeploy/ship.py", "ship"),
})
TEMPORARY_FUNCTION_IMPORTS = frozenset({
    ("calibration/quantize.py", "_name_layers"),
    ("calibration/quantize.py", "_quiet"),
    ("calibration/quantize.py", "prepare"),
    ("calibration/quantize.py", "quantizable_layers"),
    ("calibration/quantize.py", "stamp_provenance"),
    ("docs/hooks.py", "cli_reference"),
    ("exporters/fp16.py", "_count_out_of_range"),
    ("exporters/fp16.py", "convert_fp16"),
    ("exporters/int8_analysis.py", "_recorded_int8"),
    ("exporters/int8_analysis.py", "_test_results"),
    ("exporters/int8_analysis.py", "analyze_int8"),
    ("exporters/int8_analysis.py", "open_probe"),
    ("exporters/int8_analysis.py", "protect_int8"),
    ("exporters/onnx_export.py", "export_onnx"),
    ("exporters/onnx_export.py", "onnx_parity"),
    ("exporters/qdq_check.py", "check_qdq_for_tensorrt"),
    ("exporters/targets.py", "_calibrate"),
    ("exporters/targets.py", "_check_protection"),
    ("exporters/targets.py", "_checkpoint_logits"),
    ("exporters/targets.py", "_default_console"),
    ("exporters/targets.py", "_engine"),
    ("exporters/targets.py", "_export_fp16"),
    ("exporters/targets.py", "_export_int8"),
    ("exporters/targets.py", "build_verification_set"),
    ("exporters/targets.py", "ensure_verification_set"),
    ("exporters/targets.py", "make_target"),
    ("exporters/tensorrt.py", "write_build_script"),
    ("pwdeploy/api.py", "_export_target"),
    ("pwdeploy/api.py", "_prune_and_retrain"),
    ("pwdeploy/api.py", "_report"),
    ("pwdeploy/api.py", "make_config"),
    ("pwdeploy/api.py", "open_splits"),
    ("pwdeploy/api.py", "resolve_run_precision"),
    ("pwdeploy/api.py", "train_baseline"),
    ("pwdeploy/api.py", "versions"),
    ("pwdeploy/api.py", "write_run"),
    ("pwdeploy/cli.py", "_data_overrides"),
    ("pwdeploy/cli.py", "_launch_or_run"),
    ("pwdeploy/cli.py", "_max_float_help"),
    ("pwdeploy/cli.py", "analyze"),
    ("pwdeploy/cli.py", "anchor"),
    ("pwdeploy/cli.py", "compress"),
    ("pwdeploy/cli.py", "demo"),
    ("pwdeploy/cli.py", "export"),
    ("pwdeploy/cli.py", "package"),
    ("pwdeploy/cli.py", "plugins"),
    ("pwdeploy/cli.py", "ship"),
    ("pwdeploy/cli.py", "train"),
    ("pwdeploy/cli.py", "verify_command"),
    ("pwdeploy/config.py", "_check_registered"),
    ("pwdeploy/config.py", "build_config"),
    ("pwdeploy/config.py", "load_yaml"),
    ("pwdeploy/device/__main__.py", "main"),
    ("pwdeploy/device/install.py", "main"),
    ("pwdeploy/device/verify.py", "_check_set"),
    ("pwdeploy/latency/lut.py", "_layer_onnx"),
    ("pwdeploy/latency/lut.py", "runtime_key"),
    ("pwdeploy/latency/measure.py", "_as_onnx"),
    ("pwdeploy/latency/timing.py", "TimedSession.__init__"),
    ("pwdeploy/latency/timing.py", "session_options"),
    ("pwdeploy/outputs.py", "is_complete_run"),
    ("pwdeploy/outputs.py", "locked"),
    ("pwdeploy/package.py", "_check_options"),
    ("pwdeploy/package.py", "_engine_entry"),
    ("pwdeploy/package.py", "_fit_size"),
    ("pwdeploy/package.py", "_from_dataset"),
    ("pwdeploy/package.py", "_print_summary"),
    ("pwdeploy/package.py", "_run_onnx"),
    ("pwdeploy/package.py", "_stage_files"),
    ("pwdeploy/package.py", "onnx_io"),
    ("pwdeploy/package.py", "verify_locally"),
    ("pwdeploy/prune/allocation.py", "LatencyAllocation.savings"),
    ("pwdeploy/report.py", "markdown"),
    ("pwdeploy/report.py", "plot_groups"),
    ("pwdeploy/report.py", "render_reports"),
    ("pwdeploy/run_groups.py", "gdro_group_counts"),
    ("pwdeploy/run_groups.py", "prune_in_rounds"),
    ("pwdeploy/rundir.py", "RunDir.write_report"),
    ("pwdeploy/runners/__init__.py", "create_runner"),
    ("pwdeploy/runners/__init__.py", "torch_importable"),
    ("pwdeploy/runners/gpu.py", "gpu_info"),
    ("pwdeploy/runners/tensorrt_runner.py", "TensorRTRunner.describe"),
    ("pwdeploy/runners/torch_runner.py", "TorchRunner.__init__"),
    ("pwdeploy/ship.py", "_default_log"),
    ("pwdeploy/speed.py", "_cost"),
    ("pwdeploy/speed.py", "_cpu_eval"),
    ("pwdeploy/speed.py", "_measure"),
    ("pwdeploy/speed.py", "measured_latency"),
    ("pwdeploy/speed.py", "prune_for_deploy"),
    ("pwdeploy/speed.py", "resolve_round_to"),
    ("pwdeploy/trajectory.py", "check_rounds"),
    ("pwdeploy/trajectory.py", "plot_curve"),
    ("pwdeploy/verification_set.py", "VerificationSet.predictions"),
    ("pwdeploy/verification_set.py", "write_verification_set"),
    ("pwdeploy/verify.py", "_artifacts"),
    ("pwdeploy/verify.py", "_check_embedded_calibration"),
    ("pwdeploy/verify.py", "_check_not_stale"),
    ("pwdeploy/verify.py", "_check_options"),
    ("pwdeploy/verify.py", "_eval_data"),
    ("pwdeploy/verify.py", "_evaluate"),
    ("pwdeploy/verify.py", "_from_dataset"),
    ("pwdeploy/verify.py", "_from_verification_set"),
    ("pwdeploy/verify.py", "_make_runner"),
    ("pwdeploy/verify.py", "_run_all"),
    ("pwdeploy/verify.py", "_table"),
    ("pwdeploy/verify.py", "_update_report"),
    ("pwdeploy/verify.py", "verify"),
})

# ARCHITECTURE.md "Layers", bottom first (module names without the leading "pwdeploy."; shell patterns). A module
# imports modules of its own layer or of layers below it, never above; within a layer, test_import_cycles.py
# keeps the imports acyclic.
LAYERS = (
    ("base", ("pwdeploy", "errors", "names", "fsutil", "cache_dirs", "progress", "timings", "registry", "fastpath",
              "bootstrap")),
    ("core", ("metrics", "gate", "evaluate", "sampling", "verification_set", "manifest", "signature", "safe_extract",
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


def _imported_roots(node: ast.AST) -> list[str]:
    """Top-level package names an import statement loads ("." for a relative import: always pwdeploy's own)."""
    if isinstance(node, ast.Import):
        return [alias.name.split(".")[0] for alias in node.names]
    return ["."] if node.level else [node.module.split(".")[0]]


def long_functions(source: str) -> list[tuple[str, int, int]]:
    """(name, line, length) of the functions of ``source`` longer than MAX_FUNCTION_LINES (def to last line)."""
    return [(name, node.lineno, node.end_lineno - node.lineno + 1) for name, node in _functions(ast.parse(source))
            if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def function_imports(source: str, allowed: frozenset) -> list[tuple[str, int, str]]:
    """(function, line, module) of each import inside a function of ``source`` whose module is not ``allowed``."""
    return [(name, node.lineno, root) for name, function in _functions(ast.parse(source))
            for node in _own_imports(function) for root in _imported_roots(node) if root not in allowed]


def _allowed_lazy(rel: str) -> frozenset:
    return OPTIONAL_BACKENDS | DEVICE_OPTIONAL if rel in DEVICE_CODE else OPTIONAL_BACKENDS


def _offenders() -> tuple[dict, dict]:
    """{(file, function): where} for long functions and for imports inside functions, exemptions included."""
    long, imports = {}, {}
    for rel, path in _sources().items():
        source = path.read_text()
        for name, line, length in long_functions(source):
            long[(rel, name)] = f"{rel}:{line} {name} ({length} lines)"
        for name, line, module in function_imports(source, _allowed_lazy(rel)):
            imports.setdefault((rel, name), f"{rel}:{line} {name} imports {module}")
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
    assert function_imports(inner, OPTIONAL_BACKENDS) == [("outer", 2, "json"), ("outer.inner", 6, ".")]
    methods = "class A:\n    def f(self):\n        import tensorrt, os.path\n"
    assert function_imports(methods, OPTIONAL_BACKENDS) == [("A.f", 3, "os")]
    assert function_imports("import json\nif True:\n    import os\n", frozenset()) == []
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 1))
    assert long_functions(f"def fits():\n{body}\n") == []
    assert long_functions(f"def too_long():\n{body}\n    return x0\n") == [("too_long", 1, MAX_FUNCTION_LINES + 1)]
    assert _layer_of("pwdeploy.errors") == 0 and _layer_of("pwdeploy.cli") == len(LAYERS) - 1
    assert _layer_of("pwdeploy.exporters.targets") < _layer_of("pwdeploy.api")
    assert upward_imports({"pwdeploy.errors": {"pwdeploy.cli"}, "pwdeploy.cli": {"pwdeploy.errors"}}) == [
        "pwdeploy.errors (base) imports pwdeploy.cli (command line)"]
