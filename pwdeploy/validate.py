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

# The config's own ranges are declared with its settings (pwdeploy.config, checked by config.check_settings).

# -D dataset options shared by several adapters; any other numeric option must still be finite.
DATA_OPTION_RANGES = {
    "n": COUNT, "size": COUNT, "resize_shorter": COUNT, "seed": SEED, "minority_fraction": FRACTION,
    "val_fraction": Range(0.0, 1.0, high_open=True), "std": POSITIVE,
}


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

