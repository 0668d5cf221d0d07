"""The portable core: the modules a bundle ships (pwdeploy.package.DEVICE_CODE) are the ones the host imports,
need nothing beyond the standard library and numpy, and form a closed set (a shipped module never imports an
unshipped one). The trust anchor's modules (pwdeploy.anchor.MODULES) need the standard library alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from pwdeploy.anchor import MODULES
from pwdeploy.package import DEVICE_CODE

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "onnx", "rich", "typer", "torchvision", "timm")


def _module_name(rel: str) -> str:
    name = rel[:-len(".py")].replace("/", ".")
    return name[:-len(".__init__")] if name.endswith(".__init__") else name


def _file_of(module: str) -> str | None:
    base = module.replace(".", "/")
    for rel in (base + ".py", base + "/__init__.py"):
        if (ROOT / rel).is_file():
            return rel
    return None


def _pwdeploy_imports(rel: str) -> set:
    """Files of the pwdeploy modules ``rel`` imports at module level (parent packages included)."""
    package = _module_name(rel) if rel.endswith("__init__.py") else _module_name(rel).rpartition(".")[0]
    found = set()
    for node in ast.parse((ROOT / rel).read_text()).body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            if not target.startswith("pwdeploy"):
                continue
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c imports a and a.b first
                file = _file_of(".".join(parts[:i]))
                if file:
                    found.add(file)
    return found


def test_the_bundle_ships_every_module_the_device_code_imports():
    shipped = set(DEVICE_CODE)
    for rel in DEVICE_CODE:
        missing = _pwdeploy_imports(rel) - shipped
        assert not missing, f"{rel} imports {sorted(missing)}, which pwdeploy.package.DEVICE_CODE does not ship"


def test_the_anchor_embeds_every_module_its_modules_import():
    embedded = {"pwdeploy/" + rel for _, rel, _ in MODULES}
    for rel in sorted(embedded):
        missing = _pwdeploy_imports(rel) - embedded
        assert not missing, f"{rel} imports {sorted(missing)}, which pwdeploy.anchor.MODULES does not embed"
    assert embedded <= set(DEVICE_CODE) | {"pwdeploy/device/anchor.py"}


_BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked for this test: " + name)
sys.meta_path.insert(0, Blocker())
import importlib
for module in sys.argv[2].split(","):
    importlib.import_module(module)
print("imported", len(sys.argv[2].split(",")))
"""


def _import_blocked(modules, blocked) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCKER, ",".join(blocked), ",".join(modules)], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": ""})


def test_core_modules_import_without_torch_onnx_rich_or_typer():
    modules = sorted({_module_name(rel) for rel in DEVICE_CODE} | {"pwdeploy.cache_dirs"})
    proc = _import_blocked(modules, HEAVY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"imported {len(modules)}" in proc.stdout


def test_anchor_modules_import_with_the_standard_library_alone():
    modules = [name for name, _, _ in MODULES]
    proc = _import_blocked(modules, HEAVY + ("numpy",))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"imported {len(modules)}" in proc.stdout


def test_host_and_device_share_one_implementation():
    """The host modules import the core's helpers rather than keeping their own copies."""
    import pwdeploy.device.runners as device_runners
    import pwdeploy.manifest as manifest
    import pwdeploy.runners.tensorrt_runner as tensorrt_runner
    import pwdeploy.fsutil as fsutil

    assert device_runners.TensorRTRunner is tensorrt_runner.TensorRTRunner
    assert manifest.sha256_file is fsutil.sha256_file and not hasattr(manifest, "sha256_of")
    for rel in ("pwdeploy/package.py", "pwdeploy/verification_set.py", "calibration/sampler.py"):
        text = (ROOT / rel).read_text()
        assert "flatnonzero(groups == g)" not in text, f"{rel} draws its own stratified sample: use pwdeploy.sampling"
