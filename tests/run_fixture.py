"""A small finished run directory for the bundle tests (package, device verify, ship), built in seconds.

It has the files `pwdeploy compress` + `pwdeploy export` write (config.json, report.json, model.onnx,
original.onnx, model.fp16.onnx, model.int8.onnx, verification_set.npz, .complete) from a SmallCNN actually
trained on the built-in synthetic data, so the per-group numbers are real and a damaged weight really fails.
Built once per test session (module-level cache) and copied by tests that modify it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

_CACHE: dict[str, Path] = {}

DATA = {"name": "synthetic", "root": None, "options": {"n": 700, "size": 16, "minority_fraction": 0.3}}


def tiny_bundle_run(base: Path) -> Path:
    """The cached run directory (build it under ``base`` on first use). Do not modify it: copy it."""
    if "run" not in _CACHE:
        _CACHE["run"] = _build(Path(base) / "bundle-run")
    return _CACHE["run"]


def copy_run(base: Path, dest: Path) -> Path:
    shutil.copytree(tiny_bundle_run(base), dest)
    return dest


def _build(run: Path) -> Path:
    import torch
    from torch import nn

    from pwdeploy.exporters.fp16 import convert_fp16
    from pwdeploy.exporters.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
    from pwdeploy import rundir
    from pwdeploy.data import DataSpec, create_dataset
    from pwdeploy.fsutil import sha256_file, write_json
    from pwdeploy.metrics import group_metrics, predict
    from pwdeploy.models.small import SmallCNN
    from pwdeploy.verification_set import VerificationSet, write_verification_set

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = DataSpec.from_dict(DATA)
        train, test = create_dataset(spec, "train"), create_dataset(spec, "test")
        model = SmallCNN(2, width=8)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        x_train = torch.from_numpy(train.images)
        y_train = torch.from_numpy(train.labels)
        for _epoch in range(6):
            model.train()
            perm = torch.randperm(len(x_train))
            for start in range(0, len(perm), 64):
                idx = perm[start:start + 64]
                opt.zero_grad()
                nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(torch.from_numpy(test.images)).numpy()
    finally:
        torch.set_num_threads(threads)

    run.mkdir(parents=True)
    shape = tuple(test.preprocessing.input_shape)
    export_onnx(model, run / rundir.MODEL_ONNX, shape)
    shutil.copyfile(run / rundir.MODEL_ONNX, run / rundir.ORIGINAL_ONNX)
    fp16_info = convert_fp16(run / rundir.MODEL_ONNX, run / rundir.FP16_ONNX)
    calibration = _quantize_int8(run / rundir.MODEL_ONNX, run / rundir.INT8_ONNX, train.images[:64], INPUT_NAME)
    calibration["model_sha256"] = sha256_file(run / rundir.MODEL_ONNX)

    metrics = group_metrics(predict(logits), test.labels, test.groups, test.group_names)
    write_verification_set(run / "verification_set.npz", VerificationSet(
        images=test.images, labels=test.labels, groups=test.groups, group_names=list(test.group_names),
        class_names=list(test.class_names), indices=np.arange(len(test), dtype=np.int64),
        logits={"pruned": logits}, meta={"split": "test", "subset": False, "source_n": len(test)}))
    # the layout RunDir gives a run: settings and input_shape in config.json, what the data is in report.json
    write_json(run / rundir.CONFIG, {"schema": rundir.CONFIG_SCHEMA, "data": DATA,
                                     "model": {"arch": "smallcnn", "num_classes": 2}, "target": "onnx-fp32",
                                     "device": "cpu", "input_shape": list(shape)})
    write_json(run / rundir.REPORT, {
        "schema": rundir.REPORT_SCHEMA, "method": "magnitude", "loss": "pw", "flops_reduction": 0.0,
        "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "dataset": test.name,
        "class_names": list(test.class_names), "group_names": list(test.group_names),
        "preprocessing": test.preprocessing.to_dict(),
        "metrics": {"original": metrics, "pruned": metrics},
        "artifacts": {
            rundir.MODEL_ONNX: {"sha256": sha256_file(run / rundir.MODEL_ONNX), "precision": "fp32"},
            rundir.FP16_ONNX: {"sha256": sha256_file(run / rundir.FP16_ONNX), "precision": "fp16",
                               "conversion": fp16_info},
            rundir.INT8_ONNX: {"sha256": sha256_file(run / rundir.INT8_ONNX), "precision": "int8",
                               "calibration": calibration},
        },
    })
    (run / rundir.COMPLETE).write_text("test fixture\n")
    return run


def _quantize_int8(src: Path, dst: Path, images: np.ndarray, input_name: str) -> dict:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{input_name: images[i:i + 16]} for i in range(0, len(images), 16)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=True, extra_options={"ActivationSymmetric": True})
    return {"method": "minmax", "n": int(len(images)), "split": "train", "dataset": "synthetic",
            "note": "test fixture: first 64 training images"}


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


# --- bundle helpers shared by the bundle tests ------------------------------------------------------------------

def extract(bundle: Path, dest: Path) -> Path:
    """Unpack ``bundle`` with pwdeploy's safe extraction; returns the bundle folder."""
    from pwdeploy.safe_extract import safe_extract

    names = safe_extract(str(bundle), str(dest))
    return Path(dest) / names[0].split("/")[0]


def damage_classifier(model_path: Path) -> None:
    """Negate the last Gemm's weights and bias: a plausible-looking model whose predictions flip."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    gemm = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
    inits = {i.name: i for i in model.graph.initializer}
    for name in gemm.input[1:]:
        if name in inits:
            arr = numpy_helper.to_array(inits[name])
            inits[name].CopyFrom(numpy_helper.from_array(-arr, name))
    onnx.save(model, str(model_path))


def rehash(root: Path, names) -> None:
    """Record the current sha256/size of ``names`` in root/manifest.json (so the hash check passes)."""
    from pwdeploy.fsutil import sha256_file

    manifest = read_json(root / "manifest.json")
    for name in names:
        manifest["files"][name] = {"sha256": sha256_file(root / name), "bytes": (root / name).stat().st_size}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))


def repack(root: Path, out: Path, bundle_id: str | None = None, release: int | None = None) -> Path:
    """Tar ``root`` again (optionally renamed to a new bundle_id and/or given a new release number, recorded
    in the manifest; an existing signature no longer matches then)."""
    import datetime as dt

    from pwdeploy.package import _write_tar

    if release is not None:
        manifest = read_json(root / "manifest.json")
        manifest["release"] = int(release)
        (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if bundle_id and bundle_id != root.name:
        manifest = read_json(root / "manifest.json")
        manifest["bundle_id"] = bundle_id
        (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
        root = root.rename(root.parent / bundle_id)
    _write_tar(root, out, dt.datetime.now(dt.timezone.utc))
    return out


def anchor_file(base: Path) -> Path:
    """The device trust anchor (pwdeploy-device.py) written once per session under ``base``."""
    if "anchor" not in _CACHE:
        from pwdeploy.anchor import ANCHOR_NAME, write_anchor

        path = Path(base) / "anchor" / ANCHOR_NAME
        write_anchor(path)
        _CACHE["anchor"] = path
    return _CACHE["anchor"]


def state_of(bundle_dir: Path) -> Path:
    """Where the device writes its outputs for an unpacked bundle outside a deploy folder."""
    return Path(str(bundle_dir) + ".pwdeploy-state")
