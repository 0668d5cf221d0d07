"""A normal (non-editable) install must carry the dataset configs: build the wheel, install it into a fresh venv,
train from a folder outside the source tree and check that configs/synthetic.yaml's defaults were applied."""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 600


def _run(*cmd, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=TIMEOUT, **kw)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc


@pytest.mark.slow
def test_wheel_ships_configs_and_trains(tmp_path):
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", "benchmarks", "tests"))
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", src)
    wheel = next((tmp_path / "dist").glob("pwdeploy-*.whl"))
    shipped = {Path(n).name for n in zipfile.ZipFile(wheel).namelist() if n.startswith("pwdeploy/configs/")}
    assert {p.name for p in (ROOT / "configs").glob("*.yaml")} <= shipped

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    py = venv / "bin" / "python"
    purelib = Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip())
    # The heavy dependencies come from this interpreter's site-packages (a plain path: its .pth files, which
    # include the editable install of the source tree, are not processed there).
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run(sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", wheel)

    # the wheel owns only the top-level name `pwdeploy`: exporters/ and calibration/ ship inside it
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"pwdeploy", "pwdeploy-0.1.0.dist-info"}, sorted(names)[:20]
    assert "pwdeploy/exporters/targets.py" in names and "pwdeploy/calibration/quantize.py" in names
    assert {p.name for p in purelib.iterdir()} - {"deps.pth"} == {"pwdeploy", "pwdeploy-0.1.0.dist-info"}

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run(py, "-c", "import pwdeploy; print(pwdeploy.__file__)", cwd=work).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    _run(py, "-c", "import pwdeploy.exporters.targets, pwdeploy.calibration.quantize, importlib.util as u; "
         "assert u.find_spec('exporters') is None and u.find_spec('calibration') is None", cwd=work)
    _run(venv / "bin" / "pwdeploy", "train", "--data", "synthetic", "--epochs", "1", "-D", "n=300",
         "--out", "model.pt", cwd=work, env={"PATH": "/usr/bin:/bin", "PWDEPLOY_NO_PROGRESS": "1"})

    expected = yaml.safe_load((ROOT / "configs" / "synthetic.yaml").read_text())["data"]["options"]
    meta = torch.load(work / "model.pt", weights_only=True)["meta"]
    for key in ("variant", "size", "minority_fraction"):
        assert meta["data"]["options"][key] == expected[key], key
