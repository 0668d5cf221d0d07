"""Help panels: one table (panel -> option names) per command, applied to its options programmatically.

``cli.py`` declares options as usual and decorates a command with ``@panels(COMPRESS)``; the decorator gives each
option the panel the table names for it, so the option lines themselves carry no layout. An option the table does
not name lands in ``DEFAULT_PANEL`` (and ``tests/test_cli_panels.py`` fails, listing it).
"""

from __future__ import annotations

import copy
import inspect
from typing import Callable, Mapping, Sequence

from typer.models import OptionInfo

DEFAULT_PANEL = "Other"

COMPRESS: Mapping[str, Sequence[str]] = {
    "Data": ("--data", "--data-root", "--data-option", "--target-attr", "--group-attr", "--skip-bad-images",
             "--arch", "--num-classes", "--trust-pickle", "--config", "--seed"),
    "Pruning": ("--method", "--flops-reduction", "--allocation", "--prune-budget", "--max-group-drop"),
    "Loss & fairness": ("--gdro-step-size", "--gdro-adjustment", "--gdro-base", "--gdro-form", "--gdro-tolerance",
                        "--disagreement-weight", "--clusters", "--loss", "--pw-gamma", "--pw-min-weight", "--group-balanced", "--group-balance-strength",
                        "--kd-temperature", "--kd-alpha", "--kd-pw-weights", "--pseudo-groups", "--recipes"),
    "Retraining": ("--epochs", "--lr", "--select", "--retrain-schedule"),
    "Export & INT8": ("--target", "--calib-size", "--calib-method", "--protect-groups", "--max-float-layers"),
    "Speed": ("--round-to", "--latency-reduction", "--target-latency-ms", "--latency-batch"),
    "Scale": ("--device", "--nproc", "--precision", "--image-cache", "--cache-dir", "--workers"),
    "Output": ("--out", "--overwrite"),
}


def option_name(info: OptionInfo) -> str:
    """The first long name of an option: ``--group-balanced`` for ``"--group-balanced/--no-group-balanced"``."""
    names = [part for decl in info.param_decls for part in decl.split("/")]
    return next((n for n in names if n.startswith("--")), names[0] if names else "")


def panel_of(table: Mapping[str, Sequence[str]]) -> dict[str, str]:
    return {name: panel for panel, names in table.items() for name in names}


def _with_panel(param: inspect.Parameter, lookup: Mapping[str, str]) -> inspect.Parameter:
    if not isinstance(param.default, OptionInfo):
        return param
    info = copy.copy(param.default)
    info.rich_help_panel = lookup.get(option_name(info), DEFAULT_PANEL)
    return param.replace(default=info)


def _position(param: inspect.Parameter, order: Mapping[str, int]) -> int:
    """Arguments keep their place in front; options follow the table, unlisted ones last."""
    if not isinstance(param.default, OptionInfo):
        return -1
    return order.get(option_name(param.default), len(order))


def panels(table: Mapping[str, Sequence[str]]) -> Callable:
    """Decorator for a Typer command: each option's ``rich_help_panel`` from ``table``, others in DEFAULT_PANEL.

    The option objects are copied, so an option shared with another command (``--seed``) keeps that command's
    layout; the function itself is returned unchanged apart from its signature's defaults."""
    lookup = panel_of(table)
    order = {name: i for i, name in enumerate(n for names in table.values() for n in names)}

    def apply(func: Callable) -> Callable:
        signature = inspect.signature(func)
        params = [_with_panel(param, lookup) for param in signature.parameters.values()]
        params.sort(key=lambda p: _position(p, order))  # panels in table order (typer calls by keyword)
        func.__signature__ = signature.replace(parameters=params)
        return func

    return apply
