"""The Python API behind the CLI: ``train_baseline`` and ``compress_model``.

compress: original metrics -> PW targets from the frozen original -> importance + channel removal to the
MACs target -> retraining with the same loss -> checkpoints, ONNX, per-group report, in one run directory
that is built under a temporary name and renamed only when complete.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .config import PWSettings, RunConfig, build_config
from .data import DataSpec, GroupedDataset, create_dataset
from .errors import DataError, PwdeployError
from .fsutil import write_json, write_text
from .loss import LossFn, pw_targets_and_weights
from .metrics import group_metrics, predict
from .models import create_model
from .models.checkpoint import load_model, save_checkpoint
from .progress import console
from .report import comparison_table, summarize, write_reports
from . import rundir
from .train import OriginalOutputs, batch_stream, fit, make_loader, predict_logits, resolve_device, seed_everything


def make_config(overrides: dict, config_file=None, *, pw_gamma: float | None = None,
                pw_min_weight: float | None = None) -> RunConfig:
    config = build_config(overrides, config_file=config_file, data_name=overrides.get("data", {}).get("name"))
    # --pw-gamma / --pw-min-weight override the settings the active pruning method uses
    key = config.prune.method if config.prune.method in config.pw else "default"
    pw = config.pw.setdefault(key, PWSettings())
    if pw_gamma is not None:
        pw.gamma = pw_gamma
    if pw_min_weight is not None:
        if not 0.0 <= pw_min_weight <= 1.0:
            raise PwdeployError(f"--pw-min-weight must be in [0, 1], got {pw_min_weight}")
        pw.min_weight = pw_min_weight
    return config


def data_spec(config: RunConfig) -> DataSpec:
    return DataSpec(config.data.name, config.data.root, dict(config.data.options))


def check_labels(dataset: GroupedDataset, num_classes: int) -> None:
    """Labels must fit the model's output: C logits for C classes, or one logit for a binary task."""
    top = int(dataset.labels.max()) if len(dataset) else 0
    if num_classes == 1 and top > 1:
        raise DataError(f"a single-logit (binary) model cannot learn label {top} of {dataset.name}: use "
                        f"--num-classes {dataset.num_classes}")
    if num_classes > 1 and top >= num_classes:
        raise DataError(f"label {top} in {dataset.name} is outside the model's {num_classes} classes: "
                        f"use a model with --num-classes {top + 1} or check the labels")
    if len(dataset) == 0:
        raise DataError(f"the {dataset.split} split of {dataset.name} is empty: check --data-root")


def evaluate(model: torch.nn.Module, dataset: GroupedDataset, device: torch.device, name: str = "") -> dict:
    logits = predict_logits(model, dataset, device, description=f"evaluating {name}".strip())
    return group_metrics(predict(logits), dataset.labels, dataset.groups, dataset.group_names)


def versions() -> dict:
    import onnx
    import onnxruntime
    import torch_pruning
    import torchvision

    return {"pwdeploy": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "torch_pruning": torch_pruning.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def train_baseline(overrides: dict, out: str | Path, config_file=None) -> Path:
    """Train ``arch`` on the dataset's train split with cross-entropy; write a pwdeploy checkpoint."""
    config = make_config(overrides, config_file)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    spec = data_spec(config)
    train_set, test_set = create_dataset(spec, "train"), create_dataset(spec, "test")
    num_classes = config.model.num_classes or train_set.num_classes
    check_labels(train_set, num_classes)
    model = create_model(config.model.arch, num_classes)
    console.print(f"training [bold]{config.model.arch}[/] on {train_set.name} ({len(train_set)} images, "
                  f"groups {train_set.group_counts()}) on {device}")
    fit(model, train_set, LossFn("ce"), config.baseline, device, seed=config.seed, description="training baseline")
    metrics = evaluate(model, test_set, device, "baseline")
    meta = {"data": spec.to_dict(), "class_names": train_set.class_names, "group_names": train_set.group_names,
            "preprocessing": train_set.preprocessing.to_dict(), "metrics": {"test": metrics},
            "seed": config.seed, "trained_by": f"pwdeploy {__version__}"}
    save_checkpoint(model.cpu(), out, arch=config.model.arch, num_classes=num_classes, meta=meta)
    from .report import _fmt

    groups = ", ".join(f"{g} {_fmt(m['accuracy'])}%" for g, m in metrics["groups"].items())
    console.print(f"wrote {out}: test accuracy {_fmt(metrics['overall']['accuracy'])}% ({groups})")
    return Path(out)


def _group_weight_totals(config: RunConfig, train_set: GroupedDataset, original: OriginalOutputs) -> torch.Tensor:
    """Each group's summed PW weight over the training set (for the group-balanced extension)."""
    if original.cache is None:
        raise PwdeployError("--group-balanced needs cached original outputs: turn data augmentation off")
    pw = config.pw_for()
    _, weights = pw_targets_and_weights(original.cache.cpu(), torch.from_numpy(train_set.labels),
                                        gamma=pw.gamma, min_weight=pw.min_weight)
    totals = torch.zeros(len(train_set.group_names))
    totals.index_add_(0, torch.from_numpy(train_set.groups), weights)
    return totals


def _losses(config: RunConfig, group_totals) -> tuple[LossFn, LossFn]:
    """(importance loss, retraining loss) per --loss and the paper's ablation switch pw_applies_to."""
    pw = LossFn("pw", config.pw_for(), group_totals, config.group_balance_strength)
    ce = LossFn("ce")
    if config.loss == "ce":
        return ce, ce
    return (pw if config.pw_applies_to in ("both", "importance") else ce,
            pw if config.pw_applies_to in ("both", "retraining") else ce)


def compress_model(model_path: str | Path, overrides: dict, out: str | Path, config_file=None, *,
                   trust_pickle: bool = False, overwrite: bool = False, pw_gamma: float | None = None,
                   pw_min_weight: float | None = None, quiet: bool = False) -> Path:
    """Prune ``model_path`` to the configured MACs reduction, retrain, export, report. Returns the run dir."""
    from exporters.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_parity
    from .speed import measured_latency, prune_for_deploy

    started = time.time()
    config = make_config(overrides, config_file, pw_gamma=pw_gamma, pw_min_weight=pw_min_weight)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise PwdeployError(f"{out} already exists: choose another --out or pass --overwrite")
    model_in = overrides.get("model", {})
    original, info = load_model(model_path, arch=model_in.get("arch"), num_classes=model_in.get("num_classes"),
                                trust_pickle=trust_pickle)
    config.model.arch, config.model.num_classes = info["arch"], info["num_classes"]
    device = resolve_device(config.device)
    seed_everything(config.seed)

    spec = data_spec(config)
    train_set, test_set = create_dataset(spec, "train"), create_dataset(spec, "test")
    for split in (train_set, test_set):
        check_labels(split, config.model.num_classes)
    input_shape = tuple(train_set.preprocessing.input_shape)
    example = torch.randn(1, *input_shape, device=device)
    _check_model_input(original, example.cpu())

    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        meta = {"data": spec.to_dict(), "class_names": train_set.class_names, "group_names": train_set.group_names,
                "preprocessing": train_set.preprocessing.to_dict()}
        save_checkpoint(original, tmp / rundir.ORIGINAL_PT, arch=config.model.arch,
                        num_classes=config.model.num_classes, meta=meta)
        original.to(device).eval()
        metrics = {"original": evaluate(original, test_set, device, "original")}

        original_outputs = OriginalOutputs(original, train_set, device) if config.loss == "pw" else None
        group_totals = _group_weight_totals(config, train_set, original_outputs) \
            if config.loss == "pw" and config.group_balanced else None
        importance_loss, retrain_loss = _losses(config, group_totals)

        pruned = copy.deepcopy(original).to(device)
        loader = make_loader(train_set, config.retrain.batch_size, shuffle=True, seed=config.seed, drop_last=True)
        stream = batch_stream(loader, device, original_outputs)
        t0 = time.time()
        result, speed = prune_for_deploy(config, pruned, original, example, input_shape, batches=stream,
                                         loss_fn=importance_loss)
        prune_seconds = time.time() - t0
        metrics["pruned-before-retraining"] = evaluate(pruned, test_set, device, "pruned (before retraining)")
        t0 = time.time()
        history = fit(pruned, train_set, retrain_loss, config.retrain, device, original=original_outputs,
                      seed=config.seed, description=f"retraining ({config.loss})")
        retrain_seconds = time.time() - t0
        metrics["pruned"] = evaluate(pruned, test_set, device, "pruned")

        save_checkpoint(pruned.cpu(), tmp / rundir.PRUNED_PT, arch=config.model.arch,
                        num_classes=config.model.num_classes, meta=meta)
        export_onnx(pruned, tmp / rundir.MODEL_ONNX, input_shape)
        export_onnx(original, tmp / rundir.ORIGINAL_ONNX, input_shape)
        parity = onnx_parity(pruned, tmp / rundir.MODEL_ONNX, input_shape)
        speed["latency"] = measured_latency(config, tmp / rundir.ORIGINAL_ONNX, tmp / rundir.MODEL_ONNX,
                                            input_shape)

        config_dict = {"schema": rundir.CONFIG_SCHEMA, **config.to_dict(), "versions": versions(),
                       "class_names": train_set.class_names, "group_names": train_set.group_names,
                       "preprocessing": train_set.preprocessing.to_dict(), "input_shape": list(input_shape),
                       "model_source": {"path": str(model_path), "kind": info["kind"]}}
        write_json(tmp / rundir.CONFIG, config_dict)
        report = {
            "schema": rundir.REPORT_SCHEMA,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "pwdeploy_version": __version__,
            "method": config.prune.method,
            "loss": config.loss,
            "pw": config.to_dict()["pw"].get(config.prune.method) or config.to_dict()["pw"]["default"],
            "pw_applies_to": config.pw_applies_to,
            "group_balanced": config.group_balanced,
            "group_balance_strength": config.group_balance_strength,
            "flops_reduction_target": config.prune.flops_reduction,
            "flops_reduction": result.reduction,
            "macs": {"original": result.macs_before, "pruned": result.macs_after},
            "params": {"original": result.params_before, "pruned": result.params_after},
            "latency_ms": speed["latency"]["batch_1"],
            "speed": speed,
            "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "input_shape": list(input_shape),
            "num_classes": config.model.num_classes, "class_names": train_set.class_names,
            "group_names": train_set.group_names, "preprocessing": train_set.preprocessing.to_dict(),
            "data": spec.to_dict(), "data_notes": list(dict.fromkeys(train_set.notes + test_set.notes)),
            "seed": config.seed, "device": str(device),
            "metrics": {"original": metrics["original"], "pruned": metrics["pruned"]},
            "metrics_before_retraining": metrics["pruned-before-retraining"],
            "onnx_parity_max_abs": parity,
            "retrain_loss_history": history,
            "timings_s": {"prune": prune_seconds, "retrain": retrain_seconds},
            "artifacts": {},
        }
        report.update(summarize(report["metrics"]))
        write_reports(tmp, report)
        _export_target(tmp, config)
        report = _read_report(tmp)
        report["timings_s"]["total"] = time.time() - started
        write_reports(tmp, report)
        write_text(tmp / rundir.COMPLETE, report["created"] + "\n")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not quiet:
        console.print(comparison_table(report))
        console.print(f"run directory: [bold]{out}[/] (report.json, report.md, report.png, model.onnx)")
    return out


def _read_report(run_dir: Path) -> dict:
    from .fsutil import read_json

    return read_json(run_dir / rundir.REPORT)


def _export_target(run_dir: Path, config: RunConfig) -> None:
    """Precision targets (fp16, INT8, TensorRT) come from exporters.targets where that module exists."""
    try:
        from exporters.targets import export_target
    except ImportError:
        if config.target != "onnx-fp32":
            raise PwdeployError(f"--target {config.target} is not available in this build: use onnx-fp32")
        return
    export_target(run_dir, config.target, seed=config.seed, calib_size=config.calib_size,
                  calib_method=config.calib_method)


def _check_model_input(model: torch.nn.Module, example: torch.Tensor) -> None:
    try:
        with torch.no_grad():
            model.eval()(example)
    except RuntimeError as exc:
        raise PwdeployError(f"the model does not accept the dataset's input shape {tuple(example.shape[1:])}: "
                            f"{str(exc).splitlines()[0]}; check --arch or the dataset's image size") from exc
