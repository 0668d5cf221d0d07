"""The documentation site builds offline with `mkdocs build --strict` (no broken links or anchors, no warnings),
and its CLI reference, generated from the Typer app at build time, lists every option of every command."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from pwdeploy.cli import app

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]'; make test installs it)")
    pytest.importorskip("material", reason="mkdocs-material is not installed (pip install -e '.[docs]')")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _text(page: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page.read_text()))


def test_docs_build_strict_and_offline(site):
    for page in ("index.html", "quickstart/index.html", "reference/api/index.html", "results/index.html",
                 "architecture/index.html"):
        assert (site / page).is_file(), page
    assert "pwdeploy.api" in _text(site / "reference" / "api" / "index.html")  # mkdocstrings rendered the API
    assert (site / "assets" / "results" / "fairness.png").is_file()  # the benchmark plots are copied in
    fetched = set()
    for page in site.rglob("*.html"):
        fetched |= set(re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?://[^"]+)"', page.read_text()))
    assert not fetched, f"the site loads from the network: {sorted(fetched)[:5]}"


def test_cli_reference_lists_every_option_of_every_command(site):
    page = (site / "reference" / "cli" / "index.html").read_text()
    parts = re.split(r'<h2 id="pwdeploy-([a-z0-9-]+)"', page)
    sections = {parts[i]: html.unescape(re.sub(r"<[^>]+>", " ", parts[i + 1])) for i in range(1, len(parts), 2)}
    group = typer.main.get_command(app)
    missing = []
    for name, command in group.commands.items():
        section = sections.get(name)
        if section is None:
            missing.append(f"command {name}")
            continue
        for param in command.params:
            for opt in [*param.opts, *param.secondary_opts]:
                shown = opt if opt.startswith("-") else opt.upper()
                if param.name != "help" and not re.search(rf"(?<![\w-]){re.escape(shown)}(?![\w-])", section):
                    missing.append(f"{name} {shown}")
    assert not missing, f"not in the generated CLI reference: {missing}"


def test_no_internal_work_item_numbers_where_users_read():
    # upstream references such as onnx/onnx-tensorrt#850 are fine; "issue 11", "(issue 11)", "issue-6" are not
    pattern = re.compile(r"\bissues?[ -]?\d+|\(#\d+\)", re.IGNORECASE)
    paths = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *(ROOT / "docs").rglob("*.md"),
             *(ROOT / "pwdeploy").rglob("*.py"), *(ROOT / "exporters").rglob("*.py"),
             *(ROOT / "calibration").rglob("*.py"), *(ROOT / "configs").glob("*.yaml")]
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in paths for i, line in enumerate(p.read_text().splitlines(), 1)
            if pattern.search(line)]
    assert not hits, f"internal work-item numbers in user-facing text: {hits}"
    from typer.testing import CliRunner

    for command in typer.main.get_command(app).commands:
        text = CliRunner().invoke(app, [command, "--help"]).output
        assert not pattern.search(text), command
