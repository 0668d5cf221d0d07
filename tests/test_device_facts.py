"""Device facts: what the device says about itself, and the refusals when a bundle needs what it lacks."""

from __future__ import annotations

import pytest

from pwdeploy.device import facts
from pwdeploy.errors import PwdeployError

MANIFEST = {"target": "trt-int8", "precision": "int8", "engine": {"file": None, "tensorrt": None}}


def test_collect_reads_this_machine_without_importing_runtimes():
    found = facts.collect()
    assert found["python"] and found["machine"] and found["onnxruntime_providers"] is None
    assert set(found) >= {"model", "l4t", "jetpack", "gpu", "cuda", "cudnn", "tensorrt", "onnxruntime", "trtexec"}
    assert facts.describe(found)


def test_l4t_and_jetpack_from_nv_tegra_release():
    text = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 2023"
    assert facts.l4t_release(text) == "35.4.1" and facts.JETPACK["35.4"] == "5.1.2"
    assert facts.l4t_release("not a jetson") is None
    jetson = {"model": "NVIDIA Jetson AGX Orin Developer Kit", "l4t": "35.4.1", "tensorrt": "8.5.2.2"}
    assert facts.describe(jetson) == "NVIDIA Jetson AGX Orin Developer Kit (L4T 35.4.1, TRT 8.5.2.2)"


def test_refusals_name_what_is_missing_and_the_fix():
    onnx_only = {"tensorrt": None, "trtexec": None}
    assert facts.requirement_problem(MANIFEST, onnx_only, "auto") is None  # ONNX Runtime runs it
    assert "has none" in facts.requirement_problem(MANIFEST, onnx_only, "tensorrt")
    old = {"tensorrt": "7.1.3", "trtexec": "/usr/src/tensorrt/bin/trtexec"}
    assert "needs TensorRT 8.0 or newer; this device has 7.1.3" in facts.requirement_problem(MANIFEST, old, "auto")
    shipped = dict(MANIFEST, precision="fp16", engine={"file": "model.plan", "tensorrt": "10.3.0"})
    other = {"tensorrt": "8.6.2", "trtexec": None}
    assert "built with TensorRT 10.3.0 but this device has 8.6.2" in facts.requirement_problem(shipped, other, "auto")
    assert facts.requirement_problem(shipped, dict(other, trtexec="/usr/bin/trtexec"), "auto") is None  # rebuilt here
    with pytest.raises(PwdeployError, match="refused before building or running anything"):
        facts.refuse_if_lacking(MANIFEST, old, "auto")
