"""Typed run configuration: defaults < dataset YAML (configs/NAME.yaml or --config) < command-line flags.

Built once, validated (unknown keys and wrong types name the key), written to the run's config.json.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .targets import DEFAULT_CALIB_SIZE, DEFAULT_TARGET, list_targets

# configs/ at the top of the source tree; pwdeploy/configs links to it, so the wheel ships the YAMLs as package data.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class PWSettings:
    gamma: float = 1.0
    min_weight: float = 0.5
    # Paper: soft target from the original model where it was right, hard label where it was wrong.
    label_correction: bool = True


@dataclass
class KDSettings:
    # distillation from the frozen original (--loss kd): alpha * T^2 * KL(original || pruned at T) + (1 - alpha) * CE
    temperature: float = 4.0
    alpha: float = 0.9
    # multiply each sample's term by its PW weight (the method's PW settings)
    pw_weights: bool = False


@dataclass
class ClusterSettings:
    # --pseudo-groups clusters (pwdeploy.pseudo_groups): k-means per class on the original's penultimate features;
    # k: clusters per class (--clusters K), None: the best mean silhouette among 1..max_k, a k > 1 only where its
    # silhouette reaches min_silhouette (0.5: "reasonable structure" in Kaufman & Rousseeuw 1990; a single Gaussian
    # blob scores 0.3-0.4 at k = 2); clusters under min_fraction of their class merge into the nearest
    k: int | None = None
    max_k: int = 4
    min_silhouette: float = 0.5
    min_fraction: float = 0.01


@dataclass
class GDROSettings:
    # --loss gdro (Sagawa et al. 2020): q_g <- q_g * exp(step_size * (loss_g + adjustment / sqrt(n_g))), normalised;
    # loss = sum_g q_g * loss_g over the batch's per-group mean losses. base: the per-sample loss (ce as in the
    # paper; kd: distillation from the original, a pwdeploy extension)
    step_size: float = 0.01
    adjustment: float = 0.0
    base: str = "ce"


@dataclass
class StopSettings:
    # fairness as the stopping rule (pwdeploy extension): prune in rounds of at most round_size of the original
    # MACs; a round that takes any validation group more than max_group_drop points below the original (after
    # its adaptation steps) is undone and pruning stops there
    max_group_drop: float | None = None
    round_size: float = 0.1
    # --flops-reduction auto: the largest of these reductions (one pruning trajectory) whose retrained model keeps
    # every validation group within max_group_drop
    auto: bool = False
    auto_reductions: list[float] = field(default_factory=lambda: [0.5, 0.75, 0.85, 0.9, 0.95])


@dataclass
class DataSettings:
    name: str = "synthetic"
    root: str | None = None
    options: dict = field(default_factory=dict)


@dataclass
class ModelSettings:
    arch: str = "smallcnn"
    num_classes: int | None = None


@dataclass
class TrainSettings:
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str = "cosine"


@dataclass
class LoaderSettings:
    # decoded-image cache (pwdeploy/data/cache.py): auto (image-file datasets, when the disk has room), on, off,
    # rebuild (replace a stale cache)
    image_cache: str = "auto"
    cache_dir: str | None = None  # default $PWDEPLOY_IMAGE_CACHE_DIR or ~/.cache/pwdeploy/images
    workers: int | None = None  # DataLoader worker processes per rank; None: auto (pwdeploy/data/loading.py)
    pin_memory: bool | None = None  # None: on when training on CUDA


@dataclass
class PruneSettings:
    method: str = "taylor"
    flops_reduction: float = 0.75
    # taylor: gradient batches per importance estimate, optimizer steps between pruning steps
    taylor_batches: int = 4
    steps_between: int = 10
    taylor_lr: float = 0.01
    # autobot: bottleneck training steps and FLOPs-penalty weight
    autobot_steps: int = 200
    autobot_lr: float = 0.05
    autobot_flops_weight: float = 4.0
    # iterative criteria (Taylor, FairGRAPE): pruning steps to the target (each removes ~1/prune_steps of it)
    prune_steps: int = 20
    # pruning reads at most about this many retraining epochs' worth of sample passes; the values above are caps
    # (pwdeploy.prune.budget; the default was chosen on the fairness benchmark); 0: the fixed schedule above
    prune_budget: float = 12.0
    # never remove more than this fraction of a layer's channels
    max_layer_reduction: float = 0.95
    # kept channels are multiples of this in every pruned group; None: the deployment target's default
    # (pwdeploy.prune.alignment.DEFAULT_ROUND_TO), 1: no rounding
    round_to: int | None = None
    # how removals are spread over layers: one global importance ranking, the same share of every layer, or the
    # ranking weighted by LUT latency saving; auto: the deployment target's default (prune.allocation)
    allocation: str = "auto"
    # latency target on the deploy runtime (ONNX Runtime here); either replaces flops_reduction
    latency_reduction: float | None = None
    target_latency_ms: float | None = None
    latency_batch: int = 1
    latency_threads: int | None = None


@dataclass
class RunConfig:
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    loss: str = "pw"
    # pw settings per pruning method; "default" applies where a method has none
    pw: dict[str, PWSettings] = field(default_factory=lambda: {"default": PWSettings()})
    prune: PruneSettings = field(default_factory=PruneSettings)
    retrain: TrainSettings = field(default_factory=TrainSettings)
    baseline: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=15, lr=3e-3))
    flops_reductions: list[float] = field(default_factory=lambda: [0.5, 0.75, 0.9])
    # where the PW loss is applied (paper's ablation): importance, retraining, or both
    pw_applies_to: str = "both"
    # group-aware extension (not the paper's method): rebalance PW weights so each group carries equal weight
    group_balanced: bool = False
    # how far the rebalance goes: 1 equal group totals, 0.5 the square root of the full factor (loss.group_balance)
    group_balance_strength: float = 1.0
    # label-free alternative to dataset groups for the balance: "error-set" = (true label x original right/wrong)
    pseudo_groups: str = "none"
    clusters: ClusterSettings = field(default_factory=ClusterSettings)
    kd: KDSettings = field(default_factory=KDSettings)
    gdro: GDROSettings = field(default_factory=GDROSettings)
    stopping: StopSettings = field(default_factory=StopSettings)
    # retraining budget: all of it after pruning (end), or spread over pruning rounds at equal total epochs
    # (gradual: one round per retraining epoch, each followed by one epoch)
    retrain_schedule: str = "end"
    # which retraining checkpoint ships: the last epoch, or the best validation worst-group accuracy
    select: str = "last"
    # compress with each recipe (e.g. ce,pw,pw+gb,kd,fairgrape) and ship the best on validation (pwdeploy.recipes)
    recipes: list[str] = field(default_factory=list)
    target: str = DEFAULT_TARGET
    # INT8 calibration: images drawn stratified by group from the training split, and the range method
    calib_size: int = DEFAULT_CALIB_SIZE
    calib_method: str = "minmax"
    # INT8 group protection: keep the layers that hurt the worst group in float (None: pwdeploy.calibration.protect's default)
    protect_groups: bool = False
    max_float_layers: int | None = None
    seed: int = 0
    device: str = "auto"
    # training precision: auto (bf16 on GPUs that have it, else fp16; fp32 on the CPU), bf16, fp16, fp32
    precision: str = "auto"
    loader: LoaderSettings = field(default_factory=LoaderSettings)

    def pw_for(self, method: str | None = None) -> PWSettings:
        return self.pw.get(method or self.prune.method) or self.pw.get("default") or PWSettings()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {
    "pseudo_groups": ("none", "error-set", "clusters"),
    "gdro.base": ("ce", "kd"),
    "retrain_schedule": ("end", "gradual"),
    "select": ("last", "worst-group"),
    "prune.allocation": ("auto", "global", "uniform", "latency"),
    "pw_applies_to": ("both", "importance", "retraining"),
    "retrain.optimizer": ("adamw", "sgd"),
    "retrain.schedule": ("cosine", "constant"),
    "calib_method": ("minmax", "entropy", "percentile"),
    "target": tuple(list_targets()),
    "precision": ("auto", "bf16", "fp16", "fp32"),
    "loader.image_cache": ("auto", "on", "off", "rebuild"),
}


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
    import yaml

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
    merged = _merge(layers, overrides)
    config = _build(RunConfig, merged, "")
    for key, allowed in CHOICES.items():
        obj = config
        *parents, leaf = key.split(".")
        for p in parents:
            obj = getattr(obj, p)
        if getattr(obj, leaf) not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {getattr(obj, leaf)!r}")
    _check_registered(config)
    if config.protect_groups and not config.target.endswith("-int8"):
        raise ConfigError(f"--protect-groups keeps INT8 layers in float: use it with --target onnx-int8 or trt-int8, "
                          f"not {config.target}")
    _check_speed(config.prune)
    from .validate import check_config, check_data_options  # every number finite and in range (exit 2)

    check_config(config)
    check_data_options(config.data.options)
    return config


def _check_registered(config: RunConfig) -> None:
    """--loss and --method name registered plug-ins (pwdeploy.registry), not a fixed list."""
    from .registry import IMPORTANCES, LOSSES

    LOSSES.get(config.loss)
    IMPORTANCES.get(config.prune.method)


def _check_speed(prune: PruneSettings) -> None:
    if prune.latency_reduction is not None and prune.target_latency_ms is not None:
        raise ConfigError("give --latency-reduction or --target-latency-ms, not both")
