"""The Python API behind the CLI: ``train_baseline``, ``compress`` and ``compress_model``.

compress (pure, in memory): original metrics -> PW targets from the frozen original -> importance + channel
removal to the MACs target -> retraining with the same loss; it returns the models, their test-split logits and
metrics. ``write_run`` saves them: checkpoints, ONNX, the precision target (from those logits), config.json and
report.json, each written once, in one run directory built under a temporary name and renamed when complete.
"""

from __future__ import annotations

import copy
import datetime as dt
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .config import PWSettings, RunConfig, build_config
from .data import DataSpec, GroupedDataset, create_dataset
from .errors import DataError, PwdeployError
from .fsutil import write_text
from .loss import LossFn, pw_targets_and_weights
from .metrics import group_metrics, predict
from .models import create_model
from .models.checkpoint import load_model, save_checkpoint
from .outputs import begin_run, check_out, partial_path, publish
from .progress import console
from .report import comparison_table, summarize
from . import distributed, rundir
from .train import OriginalOutputs, batch_stream, fit, make_loader, predict_logits, resolve_device, seed_everything


def make_config(overrides: dict, config_file=None, *, pw_gamma: float | None = None,
                pw_min_weight: float | None = None) -> RunConfig:
    config = build_config(overrides, config_file=config_file, data_name=overrides.get("data", {}).get("name"))
    # --pw-gamma / --pw-min-weight override the settings the active pruning method uses
    key = config.prune.method if config.prune.method in config.pw else "default"
    pw = config.pw.setdefault(key, PWSettings())
    from .validate import PW_RANGES, check

    if pw_gamma is not None:
        pw.gamma = check("--pw-gamma", pw_gamma, PW_RANGES["gamma"])
    if pw_min_weight is not None:
        pw.min_weight = check("--pw-min-weight", pw_min_weight, PW_RANGES["min_weight"])
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


def evaluate(model: torch.nn.Module, dataset: GroupedDataset, device: torch.device, name: str = "",
             loader=None) -> dict:
    logits = predict_logits(model, dataset, device, description=f"evaluating {name}".strip(), loader=loader)
    return _group_metrics(logits, dataset)


def _group_metrics(logits: np.ndarray, dataset: GroupedDataset) -> dict:
    return group_metrics(predict(logits), dataset.labels, dataset.groups, dataset.group_names)


def open_splits(config: RunConfig, spec: DataSpec) -> tuple[GroupedDataset, GroupedDataset]:
    """Train and test splits, with the decoded-image cache attached where it applies (data/cache.py)."""
    from .data.cache import use_cache

    splits = create_dataset(spec, "train"), create_dataset(spec, "test")
    for split in splits:
        outcome = use_cache(split, config.loader.image_cache, config.loader.cache_dir)
        if outcome in ("hit", "built"):
            console.print(f"decoded-image cache: {outcome} for the {split.split} split ({len(split)} images)")
    return splits


def resolve_run_precision(config: RunConfig, device: torch.device) -> str:
    """Record the precision actually used (``auto`` resolved per device) in the config."""
    from .precision import resolve_precision

    config.precision = resolve_precision(config.precision, device)
    return config.precision


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
    precision = resolve_run_precision(config, device)
    seed_everything(config.seed)
    spec = data_spec(config)
    train_set, test_set = open_splits(config, spec)
    num_classes = config.model.num_classes or train_set.num_classes
    check_labels(train_set, num_classes)
    model = create_model(config.model.arch, num_classes)
    console.print(f"training [bold]{config.model.arch}[/] on {train_set.name} ({len(train_set)} images, "
                  f"groups {train_set.group_counts()}) on {device}, {precision}{_processes()}")
    fit(model, train_set, LossFn("ce"), config.baseline, device, seed=config.seed, description="training baseline",
        precision=precision, loader=config.loader)
    metrics = evaluate(model, test_set, device, "baseline", loader=config.loader)
    meta = {"data": spec.to_dict(), "class_names": train_set.class_names, "group_names": train_set.group_names,
            "preprocessing": train_set.preprocessing.to_dict(), "metrics": {"test": metrics},
            "seed": config.seed, "trained_by": f"pwdeploy {__version__}", "precision": precision,
            "distributed": distributed.describe()}
    if not distributed.is_main():  # rank 0 writes
        return Path(out)
    save_checkpoint(model.cpu(), out, arch=config.model.arch, num_classes=num_classes, meta=meta)
    from .report import _fmt

    groups = ", ".join(f"{g} {_fmt(m['accuracy'])}%" for g, m in metrics["groups"].items())
    console.print(f"wrote {out}: test accuracy {_fmt(metrics['overall']['accuracy'])}% ({groups})")
    return Path(out)


def _processes() -> str:
    n = distributed.world_size()
    return f", {n} processes ({distributed.describe()['backend']})" if n > 1 else ""


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


@dataclass
class CompressResult:
    """What ``compress`` computed, in memory: both models, their logits and metrics on the test split."""
    config: RunConfig
    original: torch.nn.Module
    pruned: torch.nn.Module
    train_set: GroupedDataset
    test_set: GroupedDataset
    logits: dict  # model name -> test-split logits (N×K numpy array)
    metrics: dict  # model name -> per-group metrics (report schema)
    prune: Any  # pwdeploy.prune.PruneResult: MACs, params, reduction
    history: list  # retraining loss per epoch
    timings_s: dict
    device: torch.device

    @property
    def input_shape(self) -> tuple:
        return tuple(self.train_set.preprocessing.input_shape)


def compress(original: torch.nn.Module, config: RunConfig, train_set: GroupedDataset, test_set: GroupedDataset,
             device: torch.device) -> CompressResult:
    """Prune ``original`` (left unchanged) to the configured MACs reduction under the configured loss and
    retrain it. Pure: reads and writes no files; every number a report needs is in the result. Under torchrun
    every rank computes the same result (the pruned architecture is checked to agree)."""
    from .prune import prune_to_flops

    precision = resolve_run_precision(config, device)
    example = torch.randn(1, *train_set.preprocessing.input_shape, device=device)
    original.to(device).eval()
    logits, metrics = {}, {}

    def evaluate_as(name: str, model: torch.nn.Module, what: str) -> None:
        logits[name] = predict_logits(model, test_set, device, description=f"evaluating {what}",
                                      loader=config.loader)
        metrics[name] = _group_metrics(logits[name], test_set)

    evaluate_as("original", original, "original")
    original_outputs = OriginalOutputs(original, train_set, device) if config.loss == "pw" else None
    group_totals = _group_weight_totals(config, train_set, original_outputs) \
        if config.loss == "pw" and config.group_balanced else None
    importance_loss, retrain_loss = _losses(config, group_totals)

    pruned = copy.deepcopy(original).to(device)
    loader = make_loader(train_set, config.retrain.batch_size, shuffle=True, seed=config.seed, drop_last=True,
                         loader=config.loader, device=device)
    stream = batch_stream(loader, device, original_outputs)
    t0 = time.time()
    result = prune_to_flops(pruned, example, method=config.prune.method,
                            flops_reduction=config.prune.flops_reduction, batches=stream,
                            loss_fn=importance_loss, settings=config.prune)
    prune_seconds = time.time() - t0
    stream.close()  # ends the pruning loader's worker processes before retraining starts its own
    distributed.check_same(distributed.shapes(pruned), "the pruned architecture")
    evaluate_as("pruned-before-retraining", pruned, "pruned (before retraining)")
    t0 = time.time()
    history = fit(pruned, train_set, retrain_loss, config.retrain, device, original=original_outputs,
                  seed=config.seed, description=f"retraining ({config.loss})", precision=precision,
                  loader=config.loader)
    retrain_seconds = time.time() - t0
    evaluate_as("pruned", pruned, "pruned")
    return CompressResult(config, original, pruned, train_set, test_set, logits, metrics, result, history,
                          {"prune": prune_seconds, "retrain": retrain_seconds}, device)


def compress_model(model_path: str | Path, overrides: dict, out: str | Path, config_file=None, *,
                   trust_pickle: bool = False, overwrite: bool = False, pw_gamma: float | None = None,
                   pw_min_weight: float | None = None, quiet: bool = False) -> Path:
    """Prune ``model_path`` to the configured MACs reduction, retrain, export, report. Returns the run dir,
    built under a temporary name and renamed only when complete."""
    started = time.time()
    config = make_config(overrides, config_file, pw_gamma=pw_gamma, pw_min_weight=pw_min_weight)
    out = Path(out)
    check_out(out, overwrite)  # before the slow work; checked again under the lock
    model_in = overrides.get("model", {})
    original, info = load_model(model_path, arch=model_in.get("arch"), num_classes=model_in.get("num_classes"),
                                trust_pickle=trust_pickle)
    config.model.arch, config.model.num_classes = info["arch"], info["num_classes"]
    device = resolve_device(config.device)
    seed_everything(config.seed)

    spec = data_spec(config)
    train_set, test_set = open_splits(config, spec)
    for split in (train_set, test_set):
        check_labels(split, config.model.num_classes)
    _check_model_input(original, torch.randn(1, *train_set.preprocessing.input_shape))

    main = distributed.is_main()  # under torchrun every rank computes; rank 0 alone writes the run directory
    tmp, release = begin_run(out, overwrite, log=console.print) if main else (partial_path(out), lambda: None)
    try:
        result = compress(original, config, train_set, test_set, device)
        if not main:
            return out
        report = write_run(rundir.RunDir(tmp), result, model_source={"path": str(model_path), "kind": info["kind"]},
                           started=started)
        publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        release()
    if not quiet:
        console.print(comparison_table(report))
        console.print(f"run directory: [bold]{out}[/] (report.json, report.md, report.png, model.onnx)")
    return out


def write_run(run: rundir.RunDir, result: CompressResult, *, model_source: dict, started: float) -> dict:
    """Save ``result`` into the (temporary) run directory: checkpoints, ONNX, the precision target, config.json
    and report.json (each written once), then the completion marker. Returns the report."""
    from exporters.onnx_export import export_onnx, onnx_parity

    config, shape = result.config, result.input_shape
    meta = {"data": data_spec(config).to_dict(), "class_names": result.train_set.class_names,
            "group_names": result.train_set.group_names, "preprocessing": result.train_set.preprocessing.to_dict()}
    for name, model in ((rundir.ORIGINAL_PT, result.original), (rundir.PRUNED_PT, result.pruned)):
        save_checkpoint(model.cpu(), run.file(name), arch=config.model.arch, num_classes=config.model.num_classes,
                        meta=meta)
    export_onnx(result.pruned, run.file(rundir.MODEL_ONNX), shape)
    export_onnx(result.original, run.file(rundir.ORIGINAL_ONNX), shape)
    config_record = {**config.to_dict(), "versions": versions(), "input_shape": list(shape),
                     "model_source": model_source, "distributed": distributed.describe()}
    run.write_config(config_record)
    report = _report(result, onnx_parity(result.pruned, run.file(rundir.MODEL_ONNX), shape))
    _export_target(run, config_record, report, result)
    report["timings_s"]["total"] = time.time() - started
    run.write_report(report)
    write_text(run.file(rundir.COMPLETE), report["created"] + "\n")
    return report


def _report(result: CompressResult, parity: float) -> dict:
    """report.json's content for a fresh run (artifacts are added by the target export)."""
    from exporters.onnx_export import INPUT_NAME, OUTPUT_NAME

    config, prune, train_set = result.config, result.prune, result.train_set
    report = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "pwdeploy_version": __version__,
        "method": config.prune.method,
        "loss": config.loss,
        "pw": config.to_dict()["pw"].get(config.prune.method) or config.to_dict()["pw"]["default"],
        "pw_applies_to": config.pw_applies_to,
        "group_balanced": config.group_balanced,
        "group_balance_strength": config.group_balance_strength,
        "flops_reduction_target": config.prune.flops_reduction,
        "flops_reduction": prune.reduction,
        "macs": {"original": prune.macs_before, "pruned": prune.macs_after},
        "params": {"original": prune.params_before, "pruned": prune.params_after},
        "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
        "class_names": train_set.class_names,
        "group_names": train_set.group_names, "preprocessing": train_set.preprocessing.to_dict(),
        "dataset": train_set.name,
        "data_notes": list(dict.fromkeys(train_set.notes + result.test_set.notes)),
        "device": str(result.device),  # as resolved (config.json has what was asked, e.g. auto)
        "metrics": {"original": result.metrics["original"], "pruned": result.metrics["pruned"]},
        "metrics_before_retraining": result.metrics["pruned-before-retraining"],
        "onnx_parity_max_abs": parity,
        "retrain_loss_history": result.history,
        "timings_s": dict(result.timings_s),
        "artifacts": {},
    }
    report.update(summarize(report["metrics"]))
    return report


def _export_target(run: rundir.RunDir, config: dict, report: dict, result: CompressResult) -> None:
    """The configured precision target, from the logits compress computed; its records go into ``report``."""
    from exporters.targets import InMemoryResults, make_target, record_target

    c = result.config
    info = make_target(run.path, config, report, c.target, seed=c.seed, calib_size=c.calib_size,
                       calib_method=c.calib_method, protect_groups=c.protect_groups,
                       max_float_layers=c.max_float_layers,
                       results=InMemoryResults(result.test_set, result.logits))
    record_target(report, info)


def _check_model_input(model: torch.nn.Module, example: torch.Tensor) -> None:
    try:
        with torch.no_grad():
            model.eval()(example)
    except RuntimeError as exc:
        raise PwdeployError(f"the model does not accept the dataset's input shape {tuple(example.shape[1:])}: "
                            f"{str(exc).splitlines()[0]}; check --arch or the dataset's image size") from exc
