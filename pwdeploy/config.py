"""Typed run configuration: defaults < dataset YAML (configs/NAME.yaml or --config) < command-line flags.

Every field is declared once with ``setting(...)`` (pwdeploy.schema): its type, default, range or choices, help
text and compress flag. Built once, validated (unknown keys, wrong types, ranges and choices name the key), written
to the run's config.json.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .calibration.protect import DEFAULT_MAX_FLOAT_LAYERS
from .data import list_datasets
from .errors import ConfigError
from .models import list_models
from .registry import IMPORTANCES, LOSSES
from .schema import Entry, entries, section, setting
from .targets import DEFAULT_CALIB_SIZE, DEFAULT_TARGET, help_text as targets_help, list_targets
from .validate import (COUNT, FRACTION, LEARNING_RATE, NON_NEGATIVE, NON_NEGATIVE_INT, POINTS, POSITIVE, SEED, Range,
                       check, check_data_options)

# configs/ at the top of the source tree; pwdeploy/configs links to it, so the wheel ships the YAMLs as package data.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
FLOPS_FRACTION = Range(0.0, 1.0, high_open=True)
OPEN_FRACTION = Range(0.0, 1.0, low_open=True, high_open=True)
PROTECT_HELP = ("INT8: keep the layers whose quantization hurts the worst group in float, greedily, until every "
                "group is within the INT8 tolerance of fp32 on the validation split (or the budget is reached).")
MAX_FLOAT_HELP = (f"INT8 with --protect-groups: at most this many layers kept in float (default "
                  f"{DEFAULT_MAX_FLOAT_LAYERS}).")


@dataclass
class PWSettings:
    gamma: float = setting(1.0, range=Range(0.0, 100.0), flag="--pw-gamma", panel="Loss & fairness",
                           help="PW exponent gamma, for the pruning method in use (overrides the config).")
    min_weight: float = setting(0.5, range=FRACTION, flag="--pw-min-weight", panel="Loss & fairness",
                                help="PW minimum weight w_min.")
    # Paper: soft target from the original model where it was right, hard label where it was wrong.
    label_correction: bool = setting(True, help="Soft target from the original where it was right, the hard label "
                                                "where it was wrong (the paper's).")


@dataclass
class KDSettings:
    # distillation from the frozen original (--loss kd): alpha * T^2 * KL(original || pruned at T) + (1 - alpha) * CE
    temperature: float = setting(4.0, range=Range(0.0, 100.0, low_open=True), flag="--kd-temperature",
                                 panel="Loss & fairness", help="--loss kd: temperature T.")
    alpha: float = setting(0.9, range=FRACTION, flag="--kd-alpha", panel="Loss & fairness",
                           help="--loss kd: weight of the distillation term against CE on the labels.")
    # multiply each sample's term by its PW weight (the method's PW settings)
    pw_weights: bool = setting(False, flag="--kd-pw-weights/--no-kd-pw-weights", panel="Loss & fairness",
                               help="--loss kd: weight each sample by its PW weight.")


@dataclass
class ClusterSettings:
    # --pseudo-groups clusters (pwdeploy.pseudo_groups): k-means per class on the original's penultimate features;
    # k: clusters per class (--clusters K), None: the best mean silhouette among 1..max_k, a k > 1 only where its
    # silhouette reaches min_silhouette (0.5: "reasonable structure" in Kaufman & Rousseeuw 1990; a single Gaussian
    # blob scores 0.3-0.4 at k = 2); clusters under min_fraction of their class merge into the nearest
    k: int | None = setting(None, range=Range(1, 64, integer=True), flag="--clusters", panel="Loss & fairness",
                            help="--pseudo-groups clusters: clusters per class (default: chosen by silhouette among "
                                 "1..clusters.max_k).")
    max_k: int = setting(4, range=Range(1, 16, integer=True), help="Largest k the silhouette choice tries.")
    min_silhouette: float = setting(0.5, range=Range(-1.0, 1.0),
                                    help="Mean silhouette a k > 1 must reach to be chosen.")
    min_fraction: float = setting(0.01, range=Range(0.0, 0.5),
                                  help="Clusters under this fraction of their class merge into the nearest.")


@dataclass
class GDROSettings:
    # --loss gdro (Sagawa et al. 2020): q_g <- q_g * exp(step_size * (loss_g + adjustment / sqrt(n_g))), normalised;
    # loss = sum_g q_g * loss_g over the batch's per-group mean losses. base: the per-sample loss (ce as in the
    # paper; kd: distillation from the original, a pwdeploy extension)
    step_size: float = setting(0.01, range=Range(0.0, 100.0), flag="--gdro-step-size", panel="Loss & fairness",
                               help="--loss gdro: step size of the exponentiated group weights (0.01 is the paper's).")
    adjustment: float = setting(0.0, range=Range(0.0, 100.0), flag="--gdro-adjustment", panel="Loss & fairness",
                                help="--loss gdro: group-size adjustment C (each group's loss + C/sqrt(n_g) in the "
                                     "update).")
    base: str = setting("ce", choices=("ce", "kd"), flag="--gdro-base", panel="Loss & fairness",
                        help="--loss gdro: per-sample loss, ce (the paper's) or kd (distillation from the original: "
                             "extension).")
    # form "constraint" (Balancing Act, Hashemizadeh et al. 2024; a pwdeploy adaptation): one Lagrange multiplier per
    # group on "its accuracy gap to the original exceeds the overall gap by more than tolerance points", raised by
    # dual ascent (step_size) on the batch's gaps; loss = mean loss + sum_g multiplier_g * loss_g
    form: str = setting("dro", choices=("dro", "constraint"), flag="--gdro-form", panel="Loss & fairness",
                        help="--loss gdro: dro (the paper's exponentiated group weights) or constraint (extension "
                             "after Balancing Act, Hashemizadeh et al. 2024: a multiplier per group on its accuracy "
                             "gap to the original beyond the overall gap, dual ascent at --gdro-step-size).")
    tolerance: float = setting(1.0, range=POINTS, flag="--gdro-tolerance", panel="Loss & fairness",
                               help="--gdro-form constraint: points a group's accuracy gap may exceed the overall gap.")


@dataclass
class StopSettings:
    # fairness as the stopping rule (pwdeploy extension): prune in rounds of at most round_size of the original
    # MACs; a round that takes any validation group more than max_group_drop points below the original (after
    # its adaptation steps) is undone and pruning stops there
    max_group_drop: float | None = setting(
        None, range=POINTS, flag="--max-group-drop", panel="Pruning",
        help="Extension: prune in rounds and undo (and stop at) the first round that takes any validation group more "
             "than D points below the original (real groups, or --pseudo-groups where validation has none).")
    round_size: float = setting(0.1, range=OPEN_FRACTION, help="Largest share of the original MACs one round removes.")
    # --flops-reduction auto: the largest of these reductions (one pruning trajectory) whose retrained model keeps
    # every validation group within max_group_drop
    auto: bool = setting(False, help="Pick the reduction by the stopping rule (set by --flops-reduction auto).")
    auto_reductions: list[float] = setting(factory=lambda: [0.5, 0.75, 0.85, 0.9, 0.95], range=FLOPS_FRACTION,
                                           help="The reductions --flops-reduction auto chooses among.")


@dataclass
class DataSettings:
    name: str = setting("synthetic", choices=list_datasets, checked_elsewhere=True, flag="--data", panel="Data",
                        show_default=False,
                        help=lambda: f"Dataset: {', '.join(list_datasets())}; default: the --config file's dataset, "
                                     "else synthetic.")
    root: str | None = setting(None, text=True, flag="--data-root", panel="Data",
                               help="Folder holding the dataset files (or its parent).")
    options: dict = setting(factory=dict, help="Dataset options (-D KEY=VALUE), checked by the dataset.")


@dataclass
class ModelSettings:
    arch: str = setting("smallcnn", text=True, flag="--arch", panel="Data", show_default=False,
                        help=lambda: f"Architecture of a state-dict MODEL: {', '.join(list_models())}.")
    num_classes: int | None = setting(None, range=COUNT, flag="--num-classes", panel="Data",
                                      help="Class count of a state-dict MODEL.")


@dataclass
class TrainSettings:
    epochs: int = setting(10, range=NON_NEGATIVE_INT, help="Training epochs.")
    lr: float = setting(1e-3, range=LEARNING_RATE, help="Learning rate.")
    batch_size: int = setting(128, range=COUNT, help="Batch size.")
    weight_decay: float = setting(1e-4, range=NON_NEGATIVE, help="Weight decay.")
    optimizer: str = setting("adamw", choices=("adamw", "sgd"), help="Optimizer.")
    schedule: str = setting("cosine", choices=("cosine", "constant"), help="Learning-rate schedule.")


@dataclass
class LoaderSettings:
    # decoded-image cache (pwdeploy/data/cache.py): auto (image-file datasets, when the disk has room), on, off,
    # rebuild (replace a stale cache)
    image_cache: str = setting("auto", choices=("auto", "on", "off", "rebuild"), flag="--image-cache", panel="Scale",
                               help="Decoded-image cache for image-file datasets: auto (when the disk has room), on, "
                                    "off, rebuild (replace a stale one).")
    cache_dir: str | None = setting(None, text=True, flag="--cache-dir", panel="Scale",
                                    help="Where decoded images are cached (default $PWDEPLOY_IMAGE_CACHE_DIR or "
                                         "~/.cache/pwdeploy/images).")
    workers: int | None = setting(None, range=NON_NEGATIVE_INT, flag="--workers", panel="Scale",
                                  help="DataLoader worker processes per process (default: auto, 0 for in-memory "
                                       "datasets).")
    pin_memory: bool | None = setting(None, help="Pinned host memory for batches (default: on when training on CUDA).")


@dataclass
class PruneSettings:
    method: str = setting("taylor", choices=IMPORTANCES, flag="--method", panel="Pruning",
                          help="Importance criterion (fairgrape: channel-level adaptation of FairGRAPE, needs training "
                               "group labels). `pwdeploy plugins` describes each.")
    flops_reduction: float = setting(0.75, range=FLOPS_FRACTION, flag="--flops-reduction", panel="Pruning",
                                     cli_type=str,
                                     help="Fraction of MACs to remove, e.g. 0.75; auto (extension, with "
                                          "--max-group-drop): the largest of stopping.auto_reductions whose retrained "
                                          "model keeps every validation group within the bound.")
    # taylor: gradient batches per importance estimate, optimizer steps between pruning steps
    taylor_batches: int = setting(4, range=COUNT, help="Taylor: gradient batches per importance estimate (a cap).")
    steps_between: int = setting(10, range=COUNT, help="Optimizer steps between pruning steps (a cap).")
    taylor_lr: float = setting(0.01, range=LEARNING_RATE, help="Taylor: learning rate of the steps between.")
    # autobot: bottleneck training steps and FLOPs-penalty weight
    autobot_steps: int = setting(200, range=COUNT, help="AutoBot: bottleneck training steps (a cap).")
    autobot_lr: float = setting(0.05, range=LEARNING_RATE, help="AutoBot: bottleneck learning rate.")
    autobot_flops_weight: float = setting(4.0, range=NON_NEGATIVE, help="AutoBot: FLOPs-penalty weight.")
    # iterative criteria (Taylor, FairGRAPE): pruning steps to the target (each removes ~1/prune_steps of it)
    prune_steps: int = setting(20, range=COUNT, help="Iterative criteria: pruning steps to the target (a cap).")
    # pruning reads at most about this many retraining epochs' worth of sample passes; the values above are caps
    # (pwdeploy.prune.budget; the default was chosen on the fairness benchmark); 0: the fixed schedule above
    prune_budget: float = setting(12.0, range=Range(0.0, 1000.0), flag="--prune-budget", panel="Pruning",
                                  help="Pruning reads at most about this many retraining epochs' worth of training "
                                       "samples (fewer steps and batches on a small dataset); 0: the fixed schedule.")
    max_layer_reduction: float = setting(0.95, range=OPEN_FRACTION,
                                         help="Never remove more than this fraction of a layer's channels.")
    # None: the deployment target's default (pwdeploy.prune.alignment.DEFAULT_ROUND_TO), 1: no rounding
    round_to: int | None = setting(None, range=Range(1, 256, integer=True), flag="--round-to", panel="Speed",
                                   help="Kept channels a multiple of N in every pruned group (default per --target: "
                                        "16 ONNX/INT8, 8 TensorRT fp16; 1: off).")
    # auto: the deployment target's default (prune.allocation)
    allocation: str = setting("auto", choices=("auto", "global", "uniform", "latency"), flag="--allocation",
                              panel="Pruning",
                              help="auto (uniform for Taylor on onnx-fp32, global otherwise), global (one importance "
                                   "ranking), uniform (every layer loses the same share) or latency (ranking weighted "
                                   "by each layer's measured latency saving).")
    # latency target on the deploy runtime (ONNX Runtime here); either replaces flops_reduction
    latency_reduction: float | None = setting(None, range=OPEN_FRACTION, flag="--latency-reduction", panel="Speed",
                                              help="Prune until the measured latency (ONNX Runtime CPU) falls by "
                                                   "this fraction.")
    target_latency_ms: float | None = setting(None, range=POSITIVE, flag="--target-latency-ms", panel="Speed",
                                              help="Prune until the measured latency is this many ms.")
    latency_batch: int = setting(1, range=COUNT, flag="--latency-batch", panel="Speed",
                                 help="Batch size the latency is for.")
    latency_threads: int | None = setting(None, range=COUNT, help="CPU threads the latency is measured with.")


_RETRAIN_FLAGS = {"epochs": dict(flag="--epochs", panel="Retraining", help="Retraining epochs after pruning."),
                  "lr": dict(flag="--lr", panel="Retraining", help="Retraining learning rate.")}


@dataclass
class RunConfig:
    data: DataSettings = section(DataSettings)
    model: ModelSettings = section(ModelSettings)
    loss: str = setting("pw", choices=LOSSES, flag="--loss", panel="Loss & fairness",
                        help="Loss (pw: the paper's; ce: baseline; kd: distillation from the original, label-free; "
                             "gdro: group DRO of Sagawa et al. 2020 over the training groups, label-free with "
                             "--pseudo-groups).")
    # pw settings per pruning method; "default" applies where a method has none
    pw: dict[str, PWSettings] = setting(factory=lambda: {"default": PWSettings()},
                                        help="PW settings per pruning method; default applies where a method has none.")
    prune: PruneSettings = section(PruneSettings)
    retrain: TrainSettings = section(TrainSettings, flags=_RETRAIN_FLAGS)
    baseline: TrainSettings = section(TrainSettings, factory=lambda: TrainSettings(epochs=15, lr=3e-3), flags={})
    flops_reductions: list[float] = setting(factory=lambda: [0.5, 0.75, 0.9], range=FLOPS_FRACTION,
                                            help="The reductions a sweep runs.")
    # where the PW loss is applied (paper's ablation): importance, retraining, or both
    pw_applies_to: str = setting("both", choices=("both", "importance", "retraining"),
                                 help="Where the PW loss applies (the paper's ablation).")
    # group-aware extension (not the paper's method): rebalance PW weights so each group carries equal weight
    group_balanced: bool = setting(False, flag="--group-balanced/--no-group-balanced", panel="Loss & fairness",
                                   help="Extension, not the paper: equal total PW weight per group (needs group "
                                        "labels; the dataset configs turn it on for synthetic and celeba, the recipe "
                                        "the benchmark supports).")
    # how far the rebalance goes: 1 equal group totals, 0.5 the square root of the full factor (loss.group_balance)
    group_balance_strength: float = setting(1.0, range=Range(0.0, 1.0, low_open=True), flag="--group-balance-strength",
                                            panel="Loss & fairness",
                                            help="With --group-balanced: 1 equal group totals, 0.5 halfway (in log "
                                                 "scale), any value in (0, 1].")
    pseudo_groups: str = setting("none", choices=("none", "error-set", "clusters"), flag="--pseudo-groups",
                                 panel="Loss & fairness",
                                 help="Extension, label-free: clusters (k-means of the original's penultimate "
                                      "features per class) or error-set (true label x original right/wrong) replace "
                                      "the dataset's groups for group balance, FairGRAPE, gdro and validation checks.")
    clusters: ClusterSettings = section(ClusterSettings)
    kd: KDSettings = section(KDSettings)
    # label-free (pwdeploy extension after Hooker et al.'s compression-identified exemplars): each sample where the
    # model being pruned predicts another class than the original counts (1 + disagreement_weight) times
    disagreement_weight: float = setting(0.0, range=Range(0.0, 1000.0), flag="--disagreement-weight",
                                         panel="Loss & fairness",
                                         help="Extension, label-free: samples the model being pruned classifies "
                                              "differently from the original count 1 + W times, in importance and "
                                              "retraining (0: off).")
    gdro: GDROSettings = section(GDROSettings)
    stopping: StopSettings = section(StopSettings)
    retrain_schedule: str = setting("end", choices=("end", "gradual"), flag="--retrain-schedule", panel="Retraining",
                                    help="end (all epochs after pruning) or gradual (extension: one pruning round per "
                                         "epoch, each followed by that epoch; equal total epochs).")
    select: str = setting("last", choices=("last", "worst-group"), flag="--select", panel="Retraining",
                          help="Checkpoint shipped: last or worst-group (best validation worst-group accuracy; needs "
                               "validation group labels).")
    # compress with each recipe and ship the best on validation (pwdeploy.recipes)
    recipes: list[str] = setting(factory=list, text=True, flag="--recipes", panel="Loss & fairness", cli_type=str,
                                 help="Compare recipes at the same MACs target and ship the best on validation, e.g. "
                                      "ce,pw,pw+gb,kd,pw+pseudo,fairgrape (needs validation group labels).")
    target: str = setting(DEFAULT_TARGET, choices=list_targets, checked_elsewhere=True, flag="--target",
                          panel="Export & INT8", help=targets_help)
    # INT8 calibration: images drawn stratified by group from the training split, and the range method
    # None: the target's own (Target.calib_size: 512 for the built-ins)
    calib_size: int | None = setting(None, range=COUNT, flag="--calib-size", panel="Export & INT8",
                                     help=f"INT8: calibration images, stratified by group (default: the target's, "
                                          f"{DEFAULT_CALIB_SIZE}).")
    calib_method: str = setting("minmax", choices=("minmax", "entropy", "percentile"), flag="--calib-method",
                                panel="Export & INT8", help="INT8: how the ranges are calibrated.")
    protect_groups: bool = setting(False, flag="--protect-groups", panel="Export & INT8", help=PROTECT_HELP)
    max_float_layers: int | None = setting(None, range=NON_NEGATIVE_INT, flag="--max-float-layers",
                                           panel="Export & INT8", help=MAX_FLOAT_HELP)
    seed: int = setting(0, range=SEED, flag="--seed", panel="Data", cli_default=0,
                        help="Seed for data order, sampling and initialisation.")
    device: str = setting("auto", text=True, flag="--device", panel="Scale", cli_default="auto",
                          help="auto (CUDA where present), cpu, cuda or cuda:N.")
    precision: str = setting("auto", choices=("auto", "bf16", "fp16", "fp32"), flag="--precision", panel="Scale",
                             help="Training precision: auto (bf16 on GPUs that have it, else fp16; fp32 on the CPU).")
    loader: LoaderSettings = section(LoaderSettings)

    def pw_for(self, method: str | None = None) -> PWSettings:
        return self.pw.get(method or self.prune.method) or self.pw.get("default") or PWSettings()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SETTINGS: tuple[Entry, ...] = tuple(entries(RunConfig))  # the schema; choices from registries stay live
BY_KEY: dict[str, Entry] = {e.key: e for e in SETTINGS}


class _Choices(Mapping):
    """key -> allowed values, read from the schema (and the registries) at each lookup."""

    def __getitem__(self, key: str) -> tuple[str, ...]:
        names = BY_KEY[key].choices() if key in BY_KEY else ()
        if not names:
            raise KeyError(key)
        return names

    def __iter__(self):
        return iter(e.key for e in SETTINGS if e.setting.choices is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


CHOICES: Mapping[str, tuple[str, ...]] = _Choices()
PW_RANGES = {name: BY_KEY[f"pw.*.{name}"].setting.range for name in ("gamma", "min_weight")}  # --pw-gamma etc.


def _build(cls, data: Any, where: str):
    """Dataclass ``cls`` from ``data`` with type checks; errors name the dotted key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key {_key(where, unknown[0])!r}: known keys are {', '.join(sorted(names))}")
    kwargs = {k: _coerce(hints[k], v, _key(where, k)) for k, v in data.items()}
    return cls(**kwargs)


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _coerce(tp, value, key: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        return _coerce(tp, value, key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}")
        return {k: _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()} if args else dict(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} must be a list, got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    return _coerce_scalar(tp, value, key)


def _coerce_scalar(tp, value, key: str):
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML reads 1e-4 as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, str, bool, float) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"config key {key!r} must be {tp.__name__}, got {value!r}")
    return value


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys")
    return data


def dataset_config_path(name: str) -> Path | None:
    path = CONFIG_DIR / f"{name}.yaml"
    return path if path.is_file() else None


def build_config(overrides: dict | None = None, *, config_file: str | Path | None = None,
                 data_name: str | None = None) -> RunConfig:
    """Defaults, then the dataset's YAML (or ``config_file``), then ``overrides`` (from CLI flags)."""
    overrides = overrides or {}
    name = data_name or overrides.get("data", {}).get("name") or (None if config_file else "synthetic")
    layers: dict = {}
    path = Path(config_file) if config_file else (dataset_config_path(name) if name else None)
    if path is not None:
        layers = load_yaml(path)
        # flags pick the dataset; a file written for another dataset must not swap it silently
    config = _build(RunConfig, _merge(layers, overrides), "")
    check_settings(config)
    if config.protect_groups and not config.target.endswith("-int8"):
        raise ConfigError(f"--protect-groups keeps INT8 layers in float: use it with --target onnx-int8 or trt-int8, "
                          f"not {config.target}")
    _check_speed(config.prune)
    check_data_options(config.data.options)
    return config


def values_of(config: RunConfig, key: str) -> list[tuple[str, Any]]:
    """(name, value) of a dotted key; a ``*`` walks a per-method mapping, a list gives each item."""
    found = [("", config)]
    for part in key.split("."):
        if part == "*":
            found = [(f"{n}.{k}", v) for n, obj in found for k, v in obj.items()]
        else:
            found = [(f"{n}.{part}" if n else part, getattr(obj, part)) for n, obj in found]
    items = []
    for name, value in found:
        items += [(f"{name}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, list) else [(name, value)]
    return items


def check_settings(config: RunConfig) -> None:
    """Every enumerated setting one of its choices, then every number finite and in range (exit 2)."""
    for entry in SETTINGS:
        choices = entry.setting.choices
        if choices is None or entry.setting.checked_elsewhere:
            continue
        for name, value in values_of(config, entry.key):
            if hasattr(choices, "get"):  # a registry: loads the built-in or plug-in on the way
                choices.get(value)
            elif value not in entry.choices():
                raise ConfigError(f"{name} must be one of {', '.join(entry.choices())}, got {value!r}")
    for entry in SETTINGS:
        if entry.setting.range is not None:
            for name, value in values_of(config, entry.key):
                flag = entry.setting.flag
                check(f"{name} ({flag.split('/')[0]})" if flag else name, value, entry.setting.range)


def _check_speed(prune: PruneSettings) -> None:
    if prune.latency_reduction is not None and prune.target_latency_ms is not None:
        raise ConfigError("give --latency-reduction or --target-latency-ms, not both")
