"""MkDocs hook: pages made at build time from the sources, so they cannot drift from them.

- ``reference/cli.md``: every command of the Typer app with its arguments and options, grouped by help panel.
- ``reference/config.md``: every config key of the schema (pwdeploy.config) with its type, default, allowed values,
  flag and help.
- ``results/*.md`` and ``assets/results/*.png``: the benchmark tables and plots committed in benchmarks/results.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:  # document this checkout, not whichever pwdeploy happens to be installed
    sys.path.insert(0, str(ROOT))

from pwdeploy.cli import app  # noqa: E402 - after the path above
from pwdeploy.config import SETTINGS  # noqa: E402
from pwdeploy.schema import allowed_text, help_text  # noqa: E402

CLI_PAGE = "reference/cli.md"
CONFIG_PAGE = "reference/config.md"
DEFAULT_PANEL = "Options"


def _escape(text: str) -> str:
    text = " ".join((text or "").split())
    for char, repl in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("*", "\\*")):
        text = text.replace(char, repl)
    return text


def _names(param) -> str:
    return ", ".join(f"`{name}`" for name in [*param.opts, *param.secondary_opts])


def _default(param) -> str:
    if param.required:
        return "required"
    value = param.default
    if value is None or callable(value) or value == () or value == []:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"`{value}`"


_TYPE_NAMES = {"str": "text", "int": "integer", "float": "number", "Path": "path", "bool": "flag", "dict": "mapping"}


def _type(param) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    choices = getattr(getattr(param, "type", None), "choices", None)
    if choices:
        return " \\| ".join(f"`{c}`" for c in choices)
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    args = getattr(annotation, "__args__", None)
    if getattr(param, "multiple", False) and args:
        annotation = args[0]
    name = getattr(annotation, "__name__", str(annotation or ""))
    return _TYPE_NAMES.get(name, name.lower()) + (" (repeatable)" if getattr(param, "multiple", False) else "")


def _options_tables(options: list) -> list[str]:
    panels: dict[str, list] = {}
    for opt in options:
        panels.setdefault(getattr(opt, "rich_help_panel", None) or DEFAULT_PANEL, []).append(opt)
    lines: list[str] = []
    for panel, members in panels.items():
        lines += [f"**{panel}**", "", "| option | type | default | what it does |", "|---|---|---|---|"]
        lines += [f"| {_names(o)} | {_type(o)} | {_default(o)} | {_escape(o.help or '')} |" for o in members]
        lines.append("")
    return lines


def _command_section(name: str, command) -> list[str]:
    # typer ships its own copy of click: parameters are told apart by kind, not by click's classes
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    usage = " ".join(["[OPTIONS]", *(p.name.upper() for p in arguments)])
    lines = [f"## pwdeploy {name}", "", _escape(command.help or ""), "", "```", f"pwdeploy {name} {usage}", "```", ""]
    if arguments:
        lines += ["| argument | what it does |", "|---|---|"]
        lines += [f"| `{p.name.upper()}` | {_escape(getattr(p, 'help', '') or '')} |" for p in arguments]
        lines.append("")
    options = [p for p in command.params if p.param_type_name == "option" and p.name != "help"]
    return lines + _options_tables(options)


def cli_reference() -> str:
    """The CLI reference page (Markdown), from the Typer app's click commands."""
    group = typer.main.get_command(app)
    lines = ["# CLI reference", "",
             "Generated from the command line itself when the documentation is built; `pwdeploy COMMAND --help` "
             "shows the same.", "",
             "Global options, given before the command: `--version` (print the version), `--debug` (show "
             "tracebacks for errors).", ""]
    for name, command in group.commands.items():
        lines += _command_section(name, command)
    return "\n".join(lines) + "\n"


def _type_name(entry) -> str:
    tp = entry.base_type
    return _TYPE_NAMES.get(getattr(tp, "__name__", ""), str(tp).replace("list[", "list of ").rstrip("]"))


def config_reference() -> str:
    """The configuration page (Markdown): one row per setting of the schema."""
    lines = ["# Configuration reference", "",
             "Every key of a run's configuration, generated from the schema (`pwdeploy.config`) when the documentation "
             "is built. Keys are dotted as in `configs/<data>.yaml` and a run's `config.json`; `pw.*` keys are set "
             "per pruning method (`pw.default` applies where a method has none). Precedence: built-in default < the "
             "dataset's YAML (or `--config FILE`) < flags.", "",
             "| key | type | default | allowed | flag | what it does |", "|---|---|---|---|---|---|"]
    for entry in SETTINGS:
        flag = " ".join(f"`{f}`" for f in (entry.setting.flag or "").split("/") if f)
        default = "" if entry.default in (None, [], {}) else f"`{entry.default}`"
        lines.append(f"| `{entry.key}` | {_type_name(entry)} | {default} | {_escape(allowed_text(entry))} | {flag} "
                     f"| {_escape(help_text(entry))} |")
    return "\n".join(lines) + "\n"


def on_files(files, config):
    files.append(File.generated(config, CLI_PAGE, content=cli_reference()))
    files.append(File.generated(config, CONFIG_PAGE, content=config_reference()))
    for path in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"assets/results/{path.name}", abs_src_path=str(path)))
    for path in sorted(RESULTS.glob("*.md")):
        files.append(File.generated(config, f"results/{path.name}", abs_src_path=str(path)))
    return files
