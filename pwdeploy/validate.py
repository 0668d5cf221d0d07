"""One validation layer for numbers: every numeric flag, config key and ``-D`` dataset option is checked for
being finite and in range here, with a one-line error naming it (exit 2).

NaN compares false with everything, so a check written as ``if x < 0: fail`` lets NaN through; every check
here is written as "is it finite and inside the range", so NaN and infinity always fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, DataError


@dataclass(frozen=True)
class Range:
    """A closed or half-open interval; ``integer`` also requires a whole number (bool is never a number)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not math.isfinite(value) or (self.integer and not float(value).is_integer()):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        if self.low is not None and self.high is not None:
            return f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {self.high:g}"
        return kind


def check(name: str, value: Any, rng: Range, *, allow_none: bool = True, error: type = ConfigError) -> Any:
    """``value`` unchanged when it is in ``rng`` (or None and allowed); else ``error`` naming ``name``."""
    if value is None and allow_none:
        return value
    if not rng.contains(value):
        raise error(f"{name} {value!r}: must be {rng.describe()}")
    return value


POSITIVE = Range(0.0, None, low_open=True)
NON_NEGATIVE = Range(0.0)
COUNT = Range(1, None, integer=True)  # at least one
NON_NEGATIVE_INT = Range(0, None, integer=True)
FRACTION = Range(0.0, 1.0)
POINTS = Range(0.0, 100.0)  # accuracy points: tolerances and allowed drops
LEARNING_RATE = Range(0.0, 10.0, low_open=True)
SEED = Range(0, 2**63 - 1, integer=True)

# Config keys (dotted, as in config.json and YAML); flags write into the same keys, so this covers both.
CONFIG_RANGES = {
    "prune.flops_reduction": Range(0.0, 1.0, high_open=True),
    "prune.taylor_batches": COUNT,
    "prune.steps_between": COUNT,
    "prune.taylor_lr": LEARNING_RATE,
    "prune.autobot_steps": COUNT,
    "prune.prune_steps": COUNT,
    "prune.prune_budget": Range(0.0, 1000.0),
    "prune.autobot_lr": LEARNING_RATE,
    "prune.autobot_flops_weight": NON_NEGATIVE,
    "prune.max_layer_reduction": Range(0.0, 1.0, low_open=True, high_open=True),
    "prune.round_to": Range(1, 256, integer=True),
    "prune.latency_reduction": Range(0.0, 1.0, low_open=True, high_open=True),
    "prune.target_latency_ms": POSITIVE,
    "prune.latency_batch": COUNT,
    "prune.latency_threads": COUNT,
    "group_balance_strength": Range(0.0, 1.0, low_open=True),
    "calib_size": COUNT,
    "max_float_layers": NON_NEGATIVE_INT,
    "loader.workers": NON_NEGATIVE_INT,
    "kd.temperature": Range(0.0, 100.0, low_open=True),
    "kd.alpha": FRACTION,
    "seed": SEED,
    "model.num_classes": COUNT,
    "clusters.k": Range(1, 64, integer=True),
    "clusters.max_k": Range(1, 16, integer=True),
    "clusters.min_silhouette": Range(-1.0, 1.0),
    "clusters.min_fraction": Range(0.0, 0.5),
    "gdro.step_size": Range(0.0, 100.0),
    "gdro.adjustment": Range(0.0, 100.0),
    "gdro.tolerance": POINTS,
    "disagreement_weight": Range(0.0, 1000.0),
    "stopping.max_group_drop": POINTS,
    "stopping.round_size": Range(0.0, 1.0, low_open=True, high_open=True),
}
for _section in ("retrain", "baseline"):
    CONFIG_RANGES.update({f"{_section}.epochs": NON_NEGATIVE_INT, f"{_section}.lr": LEARNING_RATE,
                          f"{_section}.batch_size": COUNT, f"{_section}.weight_decay": NON_NEGATIVE})
PW_RANGES = {"gamma": Range(0.0, 100.0), "min_weight": FRACTION}

# -D dataset options shared by several adapters; any other numeric option must still be finite.
DATA_OPTION_RANGES = {
    "n": COUNT, "size": COUNT, "resize_shorter": COUNT, "seed": SEED, "minority_fraction": FRACTION,
    "val_fraction": Range(0.0, 1.0, high_open=True), "std": POSITIVE,
}


def check_config(config) -> None:
    """Every numeric key of a RunConfig (pwdeploy.config) finite and in range."""
    for key, rng in CONFIG_RANGES.items():
        obj = config
        for part in key.split("."):
            obj = getattr(obj, part)
        check(_flag_name(key), obj, rng)
    for method, settings in config.pw.items():
        for key, rng in PW_RANGES.items():
            check(f"pw.{method}.{key} (--pw-{key.replace('_', '-')})", getattr(settings, key), rng)
    for i, value in enumerate(config.stopping.auto_reductions):
        check(f"stopping.auto_reductions[{i}]", value, CONFIG_RANGES["prune.flops_reduction"])
    for i, value in enumerate(config.flops_reductions):
        check(f"flops_reductions[{i}]", value, CONFIG_RANGES["prune.flops_reduction"])


def check_data_options(options: dict) -> None:
    """-D options: the shared ones in range, every number anywhere (lists included) finite (DataError: a
    dataset option, like the adapters' own checks)."""
    for key, value in options.items():
        rng = DATA_OPTION_RANGES.get(key)
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if rng is not None and isinstance(item, (int, float)):
                check(f"-D option {key}", item, rng, error=DataError)
            elif isinstance(item, float) and not math.isfinite(item):
                raise DataError(f"-D option {key} {item!r}: must be a finite number")


def _flag_name(key: str) -> str:
    """Config key plus the flag that sets it, so either spelling of the input is recognisable."""
    leaf = key.split(".")[-1].replace("_", "-")
    return f"{key} (--{leaf})" if key.split(".")[0] in ("prune", "retrain", "baseline") or "." not in key else key
