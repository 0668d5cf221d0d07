"""The config schema: each setting is declared once, as a field of the run configuration (pwdeploy.config) made
with ``setting(...)``: name and type (the field), default, range (numbers), choices (enumerations), help text,
help panel and command-line flag. Validation, the ``compress`` options and their help panels, and the
documentation's configuration table are all generated from ``entries(RunConfig)``.

Choices that come from a registry (targets, losses, criteria, datasets) are given as the registry or a function,
and read when asked for, so a target or plug-in registered after import is still a valid choice.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

from .validate import Range

# compress --help panels, in the order they are shown
PANELS = ("Data", "Pruning", "Loss & fairness", "Retraining", "Export & INT8", "Speed", "Scale", "Output")
_META = "pwdeploy.setting"
_SECTION = "pwdeploy.section"

Choices = Union[Sequence[str], Callable[[], Sequence[str]], Any]  # a tuple, a function, or a Registry


@dataclass(frozen=True)
class Setting:
    """What the schema says about one field besides its name, type and default."""

    help: str = ""
    range: Range | None = None  # numbers (for a list: each item)
    choices: Choices = None  # enumerations
    text: bool = False  # free text (a path, a device name, a recipe list parsed by pwdeploy.recipes): no choices
    checked_elsewhere: bool = False  # choices listed for help; the value is checked where it is resolved
    flag: str | None = None  # compress flag ("--kd-alpha", "--x/--no-x" for a switch); None: config file only
    aliases: tuple[str, ...] = ()
    panel: str | None = None  # compress help panel (required with a flag)
    cli_type: Any = None  # the flag's parse type where it differs from the field's (str for "auto" | a number)
    cli_default: Any = None  # a flag whose value always applies (not None) even when not given
    show_default: bool = True  # append "Default: X." to the help


def setting(default: Any = dataclasses.MISSING, *, factory: Callable | None = None, **meta: Any):
    """A dataclass field declared with its schema entry: ``x: float = setting(0.5, range=FRACTION, ...)``."""
    info = Setting(**meta)
    if info.flag and info.panel not in PANELS:
        raise ValueError(f"setting with flag {info.flag}: panel must be one of {PANELS}, got {info.panel!r}")
    if factory is not None:
        return field(default_factory=factory, metadata={_META: info})
    return field(default=default, metadata={_META: info})


def section(cls: type, *, factory: Callable | None = None, flags: Mapping[str, dict] | None = None):
    """A nested settings block; ``flags`` gives some of its fields a compress flag here (field -> Setting
    changes), since one block type (TrainSettings) serves several sections (retrain, baseline)."""
    return field(default_factory=factory or cls, metadata={_SECTION: None if flags is None else dict(flags)})


@dataclass(frozen=True)
class Entry:
    """One setting: dotted config key ("prune.flops_reduction"; "pw.*.gamma" inside a per-method mapping)."""

    key: str
    type: Any
    default: Any
    setting: Setting

    @property
    def base_type(self) -> Any:
        """int, float, str, bool, list[...] (Optional removed)."""
        if typing.get_origin(self.type) in (Union, types.UnionType):
            return next(a for a in typing.get_args(self.type) if a is not type(None))
        return self.type

    @property
    def numeric(self) -> bool:
        tp = self.base_type
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is list else tp
        return item in (int, float)

    @property
    def label(self) -> str:
        """How messages name it: the key, and the flag that sets it."""
        flag = self.setting.flag
        return f"{self.key} ({flag.split('/')[0]})" if flag else self.key

    def choices(self) -> tuple[str, ...]:
        """The allowed values now (a registry is read at this call)."""
        return choice_names(self.setting.choices)


def choice_names(choices: Choices) -> tuple[str, ...]:
    if choices is None:
        return ()
    if hasattr(choices, "names"):  # a pwdeploy.registry.Registry
        return tuple(choices.names())
    return tuple(choices() if callable(choices) else choices)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def entries(cls: type, prefix: str = "", flags: Mapping[str, dict] | None = None,
            defaults: Any = None) -> Iterator[Entry]:
    """Every setting of dataclass ``cls``, nested blocks flattened, in declaration order; ``defaults``: the
    block's default object where its section sets other defaults (baseline: 15 epochs)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _SECTION in f.metadata:
            yield from entries(tp, f"{prefix}{f.name}.", f.metadata[_SECTION], _field_default(f))
        elif typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
            yield from entries(typing.get_args(tp)[1], f"{prefix}{f.name}.*.")
        elif _META in f.metadata:
            info = f.metadata[_META]
            if flags is not None:  # a shared block: only the section's named fields have flags here
                info = dataclasses.replace(info, **{"flag": None, "panel": None, **flags.get(f.name, {})})
            default = getattr(defaults, f.name) if defaults is not None else _field_default(f)
            yield Entry(prefix + f.name, tp, default, info)
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: declare it with setting(...) or section(...)")


def with_flags(all_entries: Sequence[Entry]) -> list[Entry]:
    """The entries that are compress options, in panel order (declaration order within a panel)."""
    flagged = [e for e in all_entries if e.setting.flag]
    return sorted(flagged, key=lambda e: PANELS.index(e.setting.panel))


def help_text(entry: Entry) -> str:
    """The flag's help: the declared text, the choices (read now) and the default."""
    text = entry.setting.help() if callable(entry.setting.help) else entry.setting.help
    parts = [text.strip()]
    names = entry.choices()
    if names and not entry.setting.checked_elsewhere:
        parts.append(f"One of: {', '.join(names)}.")
    default = entry.default  # a flag with a cli_default shows it itself ([default: ...])
    if entry.setting.show_default and entry.setting.cli_default is None and default not in (None, [], {}):
        shown = ("on" if default else "off") if isinstance(default, bool) else default
        parts.append(f"Default: {shown}.")
    return " ".join(p for p in parts if p)


def allowed_text(entry: Entry) -> str:
    """What values a setting takes, for the documentation's table."""
    if entry.setting.range is not None:
        return entry.setting.range.describe()
    names = entry.choices()
    if names:
        return ", ".join(names)
    return "on / off" if entry.base_type is bool else ""
