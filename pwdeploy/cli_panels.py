"""The compress options and their help panels, generated from the config schema (pwdeploy.config, ``setting``).

A setting with a ``flag`` becomes a compress option in its ``panel``; its help text lists its choices (read from
the registries when the CLI is built) and its default. Options that are not config settings (``--out``,
``-D``, ``--config``, ...) are declared once here, in ``CLI_FLAGS``. ``COMPRESS`` (panel -> option names) is
derived from both, in panel order; ``tests/test_cli_panels.py`` checks that every option has a named panel.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import typer
import yaml
from typer.models import OptionInfo

from .config import SETTINGS
from .errors import ConfigError, PwdeployError
from .schema import PANELS, Entry, help_text, with_flags

DEFAULT_PANEL = "Other"


@dataclass(frozen=True)
class Flag:
    """One command-line option: its parameter name, declarations, type, default, help, panel, and where the value
    goes: a dotted config key of the overrides, or (``key`` None or with ``*``) the command's own keyword."""

    name: str
    decls: tuple[str, ...]
    annotation: Any
    default: Any
    help: str | Callable[[], str]
    panel: str
    key: str | None = None
    parse: Callable[[Any, dict], Any] | None = None  # (value, overrides) -> value for ``key``

    def option(self, panel: bool = True) -> OptionInfo:
        """The typer option (help read now: registry choices are current); ``panel=False`` for other commands."""
        text = self.help() if callable(self.help) else self.help
        return typer.Option(self.default, *self.decls, help=text, rich_help_panel=self.panel if panel else None)

    def parameter(self) -> inspect.Parameter:
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=self.option(),
                                 annotation=self.annotation)


def parse_data_options(items, overrides: dict):
    """``-D KEY=VALUE`` (repeatable) into a mapping; values read as YAML (numbers, lists, booleans)."""
    parsed = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PwdeployError(f"--data-option {item!r} must look like KEY=VALUE")
        parsed[key] = yaml.safe_load(value)
    return parsed or None


def _flops_reduction(text, overrides: dict):
    """``auto`` (the stopping rule picks it: pwdeploy.trajectory) or a fraction of the MACs to remove."""
    if text is None:
        return None
    if text.strip().lower() == "auto":
        put(overrides, "stopping.auto", True)
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--flops-reduction {text!r}: give a fraction such as 0.75, or auto (with "
                          "--max-group-drop)") from None


def _recipe_list(text, overrides: dict):
    return None if text is None else [r.strip() for r in text.split(",") if r.strip()]


def _only_when_on(value, overrides: dict):
    return value or None  # a data option only when given: other adapters reject unknown options


# flags whose text needs more than a type conversion on its way to the config key
PARSERS: Mapping[str, Callable[[Any, dict], Any]] = {"prune.flops_reduction": _flops_reduction,
                                                      "recipes": _recipe_list}

# options of compress that are not config settings (paths, switches of the command itself, data-option shortcuts)
CLI_FLAGS: tuple[Flag, ...] = (
    Flag("data_option", ("--data-option", "-D"), Optional[list[str]], None,
         "Dataset option KEY=VALUE, repeatable (e.g. target_attr=Smiling).", "Data", "data.options",
         parse_data_options),
    Flag("target_attr", ("--target-attr",), Optional[str], None, "CelebA: attribute to predict (default Blond_Hair).",
         "Data", "data.options.target_attr"),
    Flag("group_attr", ("--group-attr",), Optional[str], None,
         "CelebA: attribute that defines the groups (default Male).", "Data", "data.options.group_attr"),
    Flag("skip_bad_images", ("--skip-bad-images",), bool, False,
         "Count, report and skip missing or unreadable image files instead of failing.", "Data",
         "data.options.skip_bad_images", _only_when_on),
    Flag("trust_pickle", ("--trust-pickle",), bool, False, "Allow MODEL to be a pickled nn.Module.", "Data"),
    Flag("config", ("--config",), Optional[Path], None,
         "YAML config; default configs/<data>.yaml. Flags override it.", "Data"),
    Flag("nproc", ("--nproc",), Optional[int], None,
         "Run in N processes on this machine through torchrun (DDP: gloo on CPU, nccl on CUDA, one GPU each). "
         "Several machines: run torchrun yourself (docs: Several GPUs or machines).", "Scale"),
    Flag("out", ("--out",), Path, ..., "Run directory to create (runs/NAME).", "Output"),
    Flag("overwrite", ("--overwrite",), bool, False, "Replace an existing run directory.", "Output"),
)


def setting_flag(entry: Entry) -> Flag:
    """The compress option of a config setting (None default: the config file or built-in default applies)."""
    info = entry.setting
    tp = info.cli_type or entry.base_type
    flag_name = info.flag.split("/")[0]
    return Flag(flag_name.lstrip("-").replace("-", "_"), (info.flag, *info.aliases), Optional[tp], info.cli_default,
                lambda: help_text(entry), info.panel, entry.key, PARSERS.get(entry.key))


def compress_flags() -> list[Flag]:
    """Every compress option, in panel order (stable within a panel: settings first, then CLI_FLAGS)."""
    flags = [setting_flag(e) for e in with_flags(SETTINGS)] + list(CLI_FLAGS)
    return sorted(flags, key=lambda f: PANELS.index(f.panel))


FLAGS: tuple[Flag, ...] = tuple(compress_flags())
BY_NAME: dict[str, Flag] = {f.name: f for f in [*FLAGS]}
COMPRESS: Mapping[str, Sequence[str]] = {
    panel: tuple(f.decls[0].split("/")[0] for f in FLAGS if f.panel == panel) for panel in PANELS}


def put(overrides: dict, key: str, value) -> None:
    """``value`` at dotted ``key`` of the nested overrides (mappings merge)."""
    *parents, leaf = key.split(".")
    node = overrides
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = {**node[leaf], **value} if isinstance(value, dict) and isinstance(node.get(leaf), dict) else value


def split_values(values: Mapping[str, Any], flags: Sequence[Flag] = FLAGS) -> tuple[dict, dict]:
    """The parsed options into (config overrides, the command's own keywords); options not given (None) are left
    out of the overrides, so the config file and the defaults apply."""
    overrides: dict = {"data": {}}
    own: dict = {}
    for flag in flags:
        value = values[flag.name]
        if flag.key is None or "*" in flag.key:
            own[flag.name] = value
            continue
        if flag.parse is not None:
            value = flag.parse(value, overrides)
        if value is not None:
            put(overrides, flag.key, value)
    return overrides, own


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
    """Decorator for a hand-written Typer command: each option's ``rich_help_panel`` from ``table``, others in
    DEFAULT_PANEL. The option objects are copied, so an option shared with another command keeps that command's
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


def with_flags_signature(head: Sequence[inspect.Parameter], flags: Sequence[Flag] = FLAGS) -> Callable:
    """Decorator: the command takes ``head`` (its arguments) and then every flag, as keyword arguments."""

    def apply(func: Callable) -> Callable:
        func.__signature__ = inspect.Signature([*head, *(f.parameter() for f in flags)])
        return func

    return apply
