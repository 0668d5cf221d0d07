"""The Python API behind the CLI: ``train_baseline``, ``compress`` and ``compress_model``.

compress (pure, in memory): original metrics -> PW targets from the frozen original -> importance + channel
removal to the MACs target -> retraining with the same loss; it returns the models, their test-split logits and
metrics. ``write_run`` saves them: checkpoints, ONNX, the precision target (from those logits), config.json and
report.json, each written once, in one run directory built under a temporary name and renamed when complete.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
import torch_pruning
import torchvision

from pwdeploy.exporters.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_parity
from pwdeploy.exporters.targets import InMemoryResults, make_target, record_target

from . import __version__
from .config import PW_RANGES, PWSettings, RunConfig, build_config
from .data import DataSpec, GroupedDataset, create_dataset
from .data.cache import use_cache
from .errors import DataError, PwdeployError
from .fsutil import write_text
from .loss import LossFn, pseudo_group_names, pseudo_groups
from .metrics import fmt_points, group_metrics, predict
from .models import create_model
from .models.checkpoint import load_model, save_checkpoint
from .outputs import begin_run, check_out, partial_path, publish
from .precision import resolve_precision
from .progress import console
from .prune import PruneResult
from .prune.budget import CountingStream, PruneBudget, plan_for
from .timings import summary_line, timed
from .recipes import apply_recipe
from .records import ModelSource, Report, RunProvenance, Sizes, Versions
from .registry import IMPORTANCES, LOSSES
from .selection import OVERALL_MARGIN, WorstGroupCheckpoint, choose_recipe, validation_set
from .speed import measured_latency, prune_for_deploy
from .report import comparison_table
from .validate import check
from . import distributed, rundir
from .train import OriginalOutputs, batch_stream, fit, make_loader, predict_logits, resolve_device, seed_everything
from .run_groups import (check_group_options, gdro_group_counts, prepare_validation, prune_in_rounds, pseudo_report,
                         run_train_set)
from .trajectory import check_rounds, uses_rounds


def make_config(overrides: dict, config_file=None, *, pw_gamma: float | None = None,
                pw_min_weight: float | None = None) -> RunConfig:
    config = build_config(overrides, config_file=config_file, data_name=overrides.get("data", {}).get("name"))
    # --pw-gamma / --pw-min-weight override the settings the active pruning method uses
    key = config.prune.method if config.prune.method in config.pw else "default"
    pw = config.pw.setdefault(key, PWSettings())

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
    splits = create_dataset(spec, "train"), create_dataset(spec, "test")
    for split in splits:
        outcome = use_cache(split, config.loader.image_cache, config.loader.cache_dir)
        if outcome in ("hit", "built"):
            console.print(f"decoded-image cache: {outcome} for the {split.split} split ({len(split)} images)")
    return splits


def resolve_run_precision(config: RunConfig, device: torch.device) -> str:
    """Record the precision actually used (``auto`` resolved per device) in the config."""
    config.precision = resolve_precision(config.precision, device)
    return config.precision


def versions() -> Versions:
    return Versions(pwdeploy=__version__, torch=torch.__version__, torchvision=torchvision.__version__,
                    torch_pruning=torch_pruning.__version__, onnx=onnx.__version__,
                    onnxruntime=onnxruntime.__version__)


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
    groups = ", ".join(f"{g} {fmt_points(m['accuracy'])}%" for g, m in metrics["groups"].items())
    console.print(f"wrote {out}: test accuracy {fmt_points(metrics['overall']['accuracy'])}% ({groups})")
    return Path(out)


def _processes() -> str:
    n = distributed.world_size()
    return f", {n} processes ({distributed.describe()['backend']})" if n > 1 else ""


def _group_weight_totals(config: RunConfig, train_set: GroupedDataset, original: OriginalOutputs,
                         loss_fn: LossFn) -> torch.Tensor:
    """Each group's summed loss weight over the training set (group balance: an extension). The groups are
    the dataset's, or with --pseudo-groups error-set (label x original right/wrong), which need no labels."""
    if original.cache is None:
        raise PwdeployError("--group-balanced and --pseudo-groups need cached original outputs: turn data "
                            "augmentation off")
    cache, labels = original.cache.cpu(), torch.from_numpy(train_set.labels)
    weights = loss_fn.impl.sample_weights(cache, labels)
    weights = torch.ones(len(labels)) if weights is None else weights.float()
    if config.pseudo_groups == "error-set":  # clusters are the (relabelled) split's own groups
        groups, count = pseudo_groups(cache, labels), len(pseudo_group_names(config.model.num_classes or 2))
    else:
        groups, count = torch.from_numpy(train_set.groups), len(train_set.group_names)
    totals = torch.zeros(count)
    totals.index_add_(0, groups, weights)
    return totals


def _balances(config: RunConfig) -> bool:
    """Group balance (dataset or pseudo-groups) re-weights PW / KD; CE always stays the plain baseline."""
    return config.loss not in ("ce", "gdro") and (config.group_balanced or config.pseudo_groups != "none")


def _needs_original(config: RunConfig) -> bool:
    gdro = config.loss == "gdro" and (config.gdro.base == "kd" or config.pseudo_groups == "error-set"
                                      or config.gdro.form == "constraint")
    return LOSSES.get(config.loss).needs_original or _balances(config) or gdro or config.disagreement_weight > 0


def _losses(config: RunConfig, group_totals, group_counts=None) -> tuple[LossFn, LossFn]:
    """(importance loss, retraining loss) per --loss and the paper's ablation switch pw_applies_to."""
    main = LossFn(config.loss, config.pw_for(), group_totals, config.group_balance_strength, kd=config.kd,
                  pseudo_groups=config.pseudo_groups, gdro=config.gdro, group_counts=group_counts,
                  disagreement_weight=config.disagreement_weight)
    ce = LossFn("ce", disagreement_weight=config.disagreement_weight)
    if config.loss == "ce":
        return ce, ce
    if config.loss != "pw":
        return main, main
    return (main if config.pw_applies_to in ("both", "importance") else ce,
            main if config.pw_applies_to in ("both", "retraining") else ce)


def _make_losses(config: RunConfig, train_set: GroupedDataset, original: OriginalOutputs | None):
    totals = None
    if _balances(config):
        probe = LossFn(config.loss, config.pw_for(), kd=config.kd)
        totals = _group_weight_totals(config, train_set, original, probe)
    counts = gdro_group_counts(config, train_set, original) if config.loss == "gdro" else None
    return _losses(config, totals, counts)


def _check_groups_for(config: RunConfig, train_set: GroupedDataset) -> None:
    """A group-aware criterion (FairGRAPE) needs at least two groups in the training split."""
    if not IMPORTANCES.get(config.prune.method).needs_groups:
        return
    present = int((np.bincount(train_set.groups, minlength=len(train_set.group_names)) > 0).sum())
    if present < 2:
        raise DataError(f"--method {config.prune.method} needs group labels in the training split, but "
                        f"{train_set.name} has training images in {present} group(s): use a label-free option "
                        f"(--loss kd, --pseudo-groups error-set) or another --method")


@dataclasses.dataclass
class _Inputs:
    """What every candidate of a run shares: the original model, the splits, the device."""

    original: torch.nn.Module
    train_set: GroupedDataset
    test_set: GroupedDataset
    val_set: GroupedDataset | None
    device: torch.device
    example: torch.Tensor
    precision: str = "fp32"  # training precision (pwdeploy.precision)
    original_outputs: OriginalOutputs | None = None
    pseudo: dict = dataclasses.field(default_factory=dict)  # --pseudo-groups: built once per kind (pseudo_groups)
    reference_val: dict | None = None  # the original's validation metrics (--max-group-drop)

    def outputs(self) -> OriginalOutputs:
        if self.original_outputs is None:
            self.original_outputs = OriginalOutputs(self.original, self.train_set, self.device)
        return self.original_outputs


@dataclasses.dataclass
class _Outcome:
    """One candidate's result: the pruned and retrained model and what was measured on the way."""

    model: torch.nn.Module
    prune: PruneResult  # MACs, params, reduction, importance
    speed: dict  # pwdeploy.speed: channel rounding, allocation, latency target
    budget: PruneBudget
    losses: dict  # the registered losses used, by name and settings
    before: dict  # test metrics before retraining
    history: list  # retraining loss per epoch
    timings_s: dict  # prune, retrain
    checkpoint_selection: dict | None
    stopping: dict | None  # pruning in rounds (pwdeploy.trajectory)
    logits: np.ndarray | None = None  # test split, after retraining
    metrics: dict | None = None  # test split, after retraining
    validation: dict | None = None  # validation split, after retraining


@dataclasses.dataclass
class _Candidate:
    """What the pruning of one candidate needs: its losses, data stream and schedule."""

    train_set: GroupedDataset
    original_outputs: OriginalOutputs | None
    importance_loss: LossFn
    retrain_loss: LossFn
    stream: CountingStream
    budget: PruneBudget


def _candidate(config: RunConfig, inputs: _Inputs) -> _Candidate:
    train_set = run_train_set(config, inputs)  # the dataset's groups, or --pseudo-groups clusters
    original_outputs = inputs.outputs() if _needs_original(config) else None
    importance_loss, retrain_loss = _make_losses(config, train_set, original_outputs)
    loader = make_loader(train_set, config.retrain.batch_size, shuffle=True, seed=config.seed, drop_last=True,
                         loader=config.loader, device=inputs.device)
    stream = CountingStream(batch_stream(loader, inputs.device, original_outputs))
    budget = plan_for(config, len(train_set), len(train_set.group_names))  # the schedule follows the data
    return _Candidate(train_set, original_outputs, importance_loss, retrain_loss, stream, budget)


def _prune_and_retrain(config: RunConfig, inputs: _Inputs) -> _Outcome:
    """One candidate: importance + channel removal to the MACs (or latency) target, retraining, test (and val)
    metrics."""
    device, cand = inputs.device, _candidate(config, inputs)
    pruned = copy.deepcopy(inputs.original).to(device)
    pruning = dataclasses.replace(config, prune=cand.budget.apply(config.prune))

    def evaluate_on(model, dataset, name):
        return evaluate(model, dataset, device, name, loader=config.loader)

    def retrain(model, settings, seed, on_epoch_end=None):
        return fit(model, cand.train_set, cand.retrain_loss, settings, device, original=cand.original_outputs,
                   seed=seed, description=f"retraining ({config.loss})", precision=inputs.precision,
                   loader=config.loader, on_epoch_end=on_epoch_end)

    t0 = time.time()
    prune_kwargs = {"batches": cand.stream, "loss_fn": cand.importance_loss,
                    "num_groups": len(cand.train_set.group_names)}
    rounds = None
    if uses_rounds(config):
        rounds = prune_in_rounds(pruning, inputs, pruned, prune_kwargs, retrain, evaluate_on)
        pruned, result, speed = rounds.model, rounds.result, rounds.speed
    else:
        result, speed = prune_for_deploy(pruning, pruned, inputs.original, inputs.example,
                                         tuple(inputs.example.shape[1:]), **prune_kwargs)
    prune_seconds = time.time() - t0
    budget = dataclasses.replace(cand.budget, drawn_samples=cand.stream.samples * distributed.world_size())
    cand.stream.close()  # ends the pruning loader's worker processes before retraining starts its own
    distributed.check_same(distributed.shapes(pruned), "the pruned architecture")

    before = rounds.before if rounds is not None and rounds.before is not None else \
        evaluate_on(pruned, inputs.test_set, "pruned (before retraining)")
    checkpoint = WorstGroupCheckpoint(inputs.val_set, evaluate_on) if config.select == "worst-group" else None
    t0 = time.time()
    history = rounds.history if rounds is not None and rounds.history is not None else \
        retrain(pruned, config.retrain, config.seed, checkpoint)
    outcome = _Outcome(pruned, result, speed, budget,
                       {"importance": cand.importance_loss.record(), "retraining": cand.retrain_loss.record()},
                       before, history, {"prune": prune_seconds, "retrain": time.time() - t0},
                       checkpoint.restore(pruned) if checkpoint is not None else None,
                       rounds.record if rounds is not None else None)
    _evaluate_outcome(outcome, inputs, evaluate_on, config)
    return outcome


def _evaluate_outcome(outcome: _Outcome, inputs: _Inputs, evaluate_on, config: RunConfig) -> None:
    """Test-split logits and metrics (the logits travel on to the export) and validation metrics."""
    outcome.logits = predict_logits(outcome.model, inputs.test_set, inputs.device, description="evaluating pruned",
                                    loader=config.loader)
    outcome.metrics = _group_metrics(outcome.logits, inputs.test_set)
    if inputs.val_set is not None:
        outcome.validation = evaluate_on(outcome.model, inputs.val_set, "pruned (validation)")


def _compare_recipes(config: RunConfig, inputs: _Inputs) -> tuple[RunConfig, _Outcome, dict]:
    """Compress with every recipe at the same MACs target; (chosen config, its outcome, the selection record)."""
    configs = [apply_recipe(config, name) for name in config.recipes]
    candidates, outcomes = [], []
    rng_state = torch.get_rng_state()
    for name, candidate_config in zip(config.recipes, configs):
        console.print(f"recipe [bold]{name}[/]: {candidate_config.prune.method} / {candidate_config.loss}")
        torch.set_rng_state(rng_state)  # every candidate starts from the same random state
        outcome = _prune_and_retrain(candidate_config, inputs)
        outcome.model = outcome.model.cpu()  # candidates wait on the CPU
        outcomes.append(outcome)
        candidates.append({"recipe": name, "method": candidate_config.prune.method, "loss": outcome.losses,
                           "importance": outcome.prune.importance, "flops_reduction": outcome.prune.reduction,
                           "metrics_validation": outcome.validation, "metrics_test": outcome.metrics,
                           "checkpoint_selection": outcome.checkpoint_selection})
    chosen, why = choose_recipe(candidates)
    selection = {"rule": f"best validation worst-group accuracy among recipes within {OVERALL_MARGIN:g} point of "
                         "the best validation accuracy (ties: overall accuracy); the test split is never used",
                 "chosen": config.recipes[chosen], "why": why, "candidates": candidates}
    outcomes[chosen].model.to(inputs.device)
    return configs[chosen], outcomes[chosen], selection


@dataclasses.dataclass
class CompressResult:
    """What ``compress`` computed, in memory: both models, their logits and metrics on the test split.

    A stable attribute API (benchmarks and user code read it; report.json is written from it by write_run):
    ``metrics[name]`` / ``logits[name]`` for name in original, pruned (and ``metrics["pruned-before-retraining"]``),
    ``prune.reduction`` / ``macs_before`` / ``macs_after``, ``metrics_validation``, ``recipes``, ``stopping``;
    ``report()`` gives the typed ``pwdeploy.records.Report`` (changes, worst groups) without writing files."""
    config: RunConfig  # the settings of the shipped model (the chosen recipe's, with --recipes)
    original: torch.nn.Module
    pruned: torch.nn.Module
    train_set: GroupedDataset
    test_set: GroupedDataset
    logits: dict  # model name -> test-split logits (N×K numpy array)
    metrics: dict  # model name -> per-group metrics (report schema)
    prune: Any  # pwdeploy.prune.PruneResult: MACs, params, reduction, importance
    history: list  # retraining loss per epoch
    timings_s: dict
    device: torch.device
    losses: dict  # the registered losses used, by name and settings
    speed: dict  # pwdeploy.speed: channel rounding, latency target and the measured latency
    checkpoint_selection: dict | None = None  # --select worst-group
    metrics_validation: dict | None = None  # with a validation split (--select, --recipes)
    recipes: dict | None = None  # --recipes: every candidate, the chosen one and why
    prune_budget: Any = None  # pwdeploy.prune.budget.PruneBudget: the pruning schedule and its cost
    stopping: dict | None = None  # --max-group-drop / --flops-reduction auto / gradual: the rounds (trajectory)
    pseudo_groups: dict | None = None  # --pseudo-groups: what was found (run_groups.pseudo_report)

    @property
    def input_shape(self) -> tuple:
        return tuple(self.train_set.preprocessing.input_shape)

    def report(self) -> Report:
        """The run's report in memory, nothing written: metrics, changes, worst groups, MACs, settings. What
        needs files (measured latency, ONNX parity, artifacts) is filled in only by ``write_run``."""
        return report_record(self, None)


def compress(original: torch.nn.Module, config: RunConfig, train_set: GroupedDataset, test_set: GroupedDataset,
             device: torch.device, val_set: GroupedDataset | None = None) -> CompressResult:
    """Prune ``original`` (left unchanged) to the configured MACs reduction under the configured loss and
    retrain it (with --recipes: each recipe, keeping the best on ``val_set``). Pure: reads and writes no files;
    every number a report needs is in the result. Under torchrun every rank computes the same result."""
    started = time.time()
    precision = resolve_run_precision(config, device)
    example = torch.randn(1, *train_set.preprocessing.input_shape, device=device)
    original.to(device).eval()
    logits = {"original": predict_logits(original, test_set, device, description="evaluating original",
                                         loader=config.loader)}
    inputs = _Inputs(original, train_set, test_set, val_set, device, example, precision)
    prepare_validation(config, inputs)  # no labelled groups on validation: the pseudo-groups stand in
    selection = None
    if config.recipes:
        recipes = config.recipes
        config, outcome, selection = _compare_recipes(config, inputs)
        config.recipes = recipes  # config.json records the comparison, and the chosen recipe's settings
    else:
        outcome = _prune_and_retrain(config, inputs)
    logits["pruned"] = outcome.logits
    metrics = {"original": _group_metrics(logits["original"], test_set), "pruned-before-retraining": outcome.before,
               "pruned": outcome.metrics}
    metrics_validation = None
    if inputs.val_set is not None:  # on every rank: evaluation is sharded across the processes
        metrics_validation = {"original": evaluate(original, inputs.val_set, device, "original (validation)",
                                                   loader=config.loader), "pruned": outcome.validation}
    timings = dict(outcome.timings_s)  # evaluate: everything compress did besides pruning and retraining
    timings["evaluate"] = max(0.0, time.time() - started - timings["prune"] - timings["retrain"])
    return CompressResult(config=config, original=original, pruned=outcome.model, train_set=train_set,
                          test_set=test_set, logits=logits, metrics=metrics, prune=outcome.prune,
                          history=outcome.history, timings_s=timings, device=device, losses=outcome.losses,
                          speed=outcome.speed, checkpoint_selection=outcome.checkpoint_selection,
                          metrics_validation=metrics_validation, recipes=selection, prune_budget=outcome.budget,
                          stopping=outcome.stopping, pseudo_groups=pseudo_report(config, inputs))


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
    for candidate in [apply_recipe(config, name) for name in config.recipes] or [config]:
        _check_groups_for(candidate, train_set)  # a misspelt recipe or missing groups fail before any work
        check_group_options(candidate, train_set)
        check_rounds(candidate)
    flag = "--recipes" if config.recipes else "--select worst-group" if config.select == "worst-group" else \
        "--max-group-drop"
    wants_val = config.recipes or config.select == "worst-group" or config.stopping.max_group_drop is not None
    val_set = validation_set(spec, flag, pseudo=config.pseudo_groups) if wants_val else None
    _check_model_input(original, torch.randn(1, *train_set.preprocessing.input_shape))

    main = distributed.is_main()  # under torchrun every rank computes; rank 0 alone writes the run directory
    tmp, release = begin_run(out, overwrite, log=console.print) if main else (partial_path(out), lambda: None)
    try:
        result = compress(original, config, train_set, test_set, device, val_set)
        if not main:
            return out
        report = write_run(rundir.RunDir(tmp), result, model_source=ModelSource(str(model_path), info["kind"]),
                           started=started)
        publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        release()
    if not quiet:
        console.print(comparison_table(report))
        console.print(summary_line(report.timings_s, report.prune_budget))
        console.print(f"run directory: [bold]{out}[/] (report.json, report.md, report.png, model.onnx)")
    return out


def write_run(run: rundir.RunDir, result: CompressResult, *, model_source: ModelSource, started: float) -> Report:
    """Save ``result`` into the (temporary) run directory: checkpoints, ONNX, the precision target, config.json
    and report.json (each written once), then the completion marker. Returns the report."""
    config, shape, timings = result.config, result.input_shape, dict(result.timings_s)
    meta = {"data": data_spec(config).to_dict(), "class_names": result.train_set.class_names,
            "group_names": result.train_set.group_names, "preprocessing": result.train_set.preprocessing.to_dict()}
    with timed(timings, "export"):
        for name, model in ((rundir.ORIGINAL_PT, result.original), (rundir.PRUNED_PT, result.pruned)):
            save_checkpoint(model.cpu(), run.file(name), arch=config.model.arch,
                            num_classes=config.model.num_classes, meta=meta)
        export_onnx(result.pruned, run.file(rundir.MODEL_ONNX), shape)
        export_onnx(result.original, run.file(rundir.ORIGINAL_ONNX), shape)
    with timed(timings, "latency"):
        result.speed["latency"] = measured_latency(config, run.file(rundir.ORIGINAL_ONNX),
                                                   run.file(rundir.MODEL_ONNX), shape)
    run.write_config(config.to_dict(), RunProvenance(versions(), list(shape), model_source, distributed.describe()))
    config_record = run.config  # make_target reads config.json's form
    with timed(timings, "verify"):
        parity = onnx_parity(result.pruned, run.file(rundir.MODEL_ONNX), shape)
    report = report_record(result, parity)
    with timed(timings, "export"):
        _export_target(run, config_record, report, result)
    report.timings_s = {**timings, "total": time.time() - started}
    run.write_report(report)
    write_text(run.file(rundir.COMPLETE), report.created + "\n")
    return report


def report_record(result: CompressResult, parity: float | None) -> Report:
    """The report of a fresh run (artifacts are added by the target export)."""
    config, prune, train_set = result.config, result.prune, result.train_set
    settings = config.to_dict()["pw"]
    report = Report(
        method=config.prune.method, loss=config.loss, flops_reduction=prune.reduction,
        input_name=INPUT_NAME, output_name=OUTPUT_NAME, dataset=train_set.name,
        class_names=train_set.class_names, group_names=train_set.group_names,
        preprocessing=train_set.preprocessing.to_dict(),
        metrics={"original": result.metrics["original"], "pruned": result.metrics["pruned"]},
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), pwdeploy_version=__version__,
        pw=settings.get(config.prune.method) or settings["default"], pw_applies_to=config.pw_applies_to,
        group_balanced=config.group_balanced, group_balance_strength=config.group_balance_strength,
        # --flops-reduction auto: the reduction the stopping rule chose (``stopping`` has the curve)
        flops_reduction_target=result.stopping["reached"] if config.stopping.auto else config.prune.flops_reduction,
        macs=Sizes(prune.macs_before, prune.macs_after), params=Sizes(prune.params_before, prune.params_after),
        speed=rundir.parse_speed(result.speed),
        data_notes=list(dict.fromkeys(train_set.notes + result.test_set.notes)),
        device=str(result.device),  # as resolved (config.json has what was asked, e.g. auto)
        metrics_before_retraining=result.metrics["pruned-before-retraining"], onnx_parity_max_abs=parity,
        retrain_loss_history=result.history, timings_s=dict(result.timings_s),
        prune_budget=result.prune_budget.to_dict() if result.prune_budget is not None else None,
        importance=prune.importance, loss_fn=result.losses,  # registered plug-ins by name and settings
        pseudo_groups=config.pseudo_groups, select=config.select, checkpoint_selection=result.checkpoint_selection,
        metrics_validation=result.metrics_validation, recipes=result.recipes,
        stopping=rundir.parse_stopping(result.stopping), pseudo_groups_found=result.pseudo_groups)
    report.summarize()
    return report


def _export_target(run: rundir.RunDir, config: dict, report: Report, result: CompressResult) -> None:
    """The configured precision target, from the logits compress computed; its records go into ``report``."""
    c = result.config
    info = make_target(run.path, config, {"input_name": report.input_name, "artifacts": {}}, c.target, seed=c.seed,
                       calib_size=c.calib_size, calib_method=c.calib_method, protect_groups=c.protect_groups,
                       max_float_layers=c.max_float_layers, results=InMemoryResults(result.test_set, result.logits))
    record_target(report, info)


def _check_model_input(model: torch.nn.Module, example: torch.Tensor) -> None:
    try:
        with torch.no_grad():
            model.eval()(example)
    except RuntimeError as exc:
        raise PwdeployError(f"the model does not accept the dataset's input shape {tuple(example.shape[1:])}: "
                            f"{str(exc).splitlines()[0]}; check --arch or the dataset's image size") from exc
