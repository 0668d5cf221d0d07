"""Where pwdeploy keeps its caches on the host: one owner for the environment variables that move them.

- ``PWDEPLOY_IMAGE_CACHE_DIR``: decoded, preprocessed images (default ``~/.cache/pwdeploy/images``)
- ``PWDEPLOY_LATENCY_CACHE_DIR``: measured per-layer latency tables (default ``~/.cache/pwdeploy/latency``)

Earlier releases used ``PWDEPLOY_CACHE_DIR`` for the image folder and ``PWDEPLOY_CACHE`` for a root holding
``latency/``: two names that read alike and meant different things. Both are still honoured, with a warning
naming the replacement.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

IMAGE_CACHE_ENV = "PWDEPLOY_IMAGE_CACHE_DIR"
LATENCY_CACHE_ENV = "PWDEPLOY_LATENCY_CACHE_DIR"
_OLD_IMAGE_CACHE_ENV = "PWDEPLOY_CACHE_DIR"  # the image folder itself
_OLD_CACHE_ROOT_ENV = "PWDEPLOY_CACHE"  # a root; the latency tables lived in its latency/ folder


def _home_cache() -> Path:
    return Path.home() / ".cache" / "pwdeploy"


def _deprecated(old: str, new: str, value: str) -> str:
    warnings.warn(f"${old} is deprecated: set ${new} instead (now using {value})", FutureWarning, stacklevel=3)
    return value


def image_cache_dir() -> Path:
    """The folder for decoded-image caches: $PWDEPLOY_IMAGE_CACHE_DIR, else ~/.cache/pwdeploy/images."""
    value: Optional[str] = os.environ.get(IMAGE_CACHE_ENV)
    if not value and os.environ.get(_OLD_IMAGE_CACHE_ENV):
        value = _deprecated(_OLD_IMAGE_CACHE_ENV, IMAGE_CACHE_ENV, os.environ[_OLD_IMAGE_CACHE_ENV])
    return Path(value).expanduser() if value else _home_cache() / "images"


def latency_cache_dir() -> Path:
    """The folder for latency tables: $PWDEPLOY_LATENCY_CACHE_DIR, else ~/.cache/pwdeploy/latency."""
    value: Optional[str] = os.environ.get(LATENCY_CACHE_ENV)
    if not value and os.environ.get(_OLD_CACHE_ROOT_ENV):
        root = os.environ[_OLD_CACHE_ROOT_ENV]
        value = _deprecated(_OLD_CACHE_ROOT_ENV, LATENCY_CACHE_ENV, str(Path(root) / "latency"))
    return Path(value).expanduser() if value else _home_cache() / "latency"
