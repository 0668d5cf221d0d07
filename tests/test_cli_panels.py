"""compress --help groups its options in panels from one table (pwdeploy.cli_panels.COMPRESS)."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from pwdeploy.cli import app
from pwdeploy.cli_panels import COMPRESS, DEFAULT_PANEL

PANELS = ["Data", "Pruning", "Loss & fairness", "Retraining", "Export & INT8", "Speed", "Scale", "Output"]


def _options(name: str) -> list:
    command = typer.main.get_command(app).commands[name]
    return [p for p in command.params if p.param_type_name == "option" and p.name != "help"]


def test_every_compress_option_is_in_a_named_panel():
    unplaced = [p.opts[0] for p in _options("compress") if p.rich_help_panel in (None, DEFAULT_PANEL)]
    assert not unplaced, f"add these compress options to pwdeploy/cli_panels.py COMPRESS: {unplaced}"
    assert list(COMPRESS) == PANELS


def test_the_table_names_only_options_compress_has():
    known = {opt for p in _options("compress") for opt in [*p.opts, *p.secondary_opts]}
    stale = [name for names in COMPRESS.values() for name in names if name not in known]
    assert not stale, f"pwdeploy/cli_panels.py COMPRESS names options compress does not have: {stale}"
    listed = [name for names in COMPRESS.values() for name in names]
    assert len(listed) == len(set(listed)), "an option is listed in two panels"


def test_help_shows_the_panels_in_table_order_and_shared_options_stay_put():
    result = CliRunner().invoke(app, ["compress", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    positions = [result.output.find(f"─ {panel} ─") for panel in PANELS]
    assert -1 not in positions, result.output
    assert positions == sorted(positions)
    # options shared with other commands (--seed, --data) were copied: export/train keep the default layout
    for command in ("export", "train"):
        assert all(p.rich_help_panel is None for p in _options(command)), command


def test_an_option_missing_from_the_table_lands_in_the_default_panel():
    from pwdeploy.cli_panels import panels

    small = typer.Typer()

    @small.command()
    @panels({"A": ("--a",)})
    def run(b: int = typer.Option(0, "--b"), a: int = typer.Option(0, "--a")):
        print(a + b)

    params = {p.name: p.rich_help_panel for p in typer.main.get_command(small).params if p.name in ("a", "b")}
    assert params == {"a": "A", "b": DEFAULT_PANEL}
    assert CliRunner().invoke(small, ["--a", "2", "--b", "3"]).output.strip() == "5"  # values still reach it
