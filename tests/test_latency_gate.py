"""The latency gate: budgets signed into the manifest, measured on the "device" (this CPU, ONNX Runtime, torch
blocked, through the trust anchor), one PASSED/FAILED line each in the verifier's table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_fixture import extract, read_json, tiny_bundle_run  # noqa: E402

from pwdeploy.cli import main  # noqa: E402
from pwdeploy.errors import PwdeployError  # noqa: E402
from pwdeploy.latency_core import Settings, time_pair, time_until_stable  # noqa: E402
from pwdeploy.latency_gate import check_latency, manifest_section, parse_budget, table_lines  # noqa: E402
from pwdeploy.package import package_run, verify_locally  # noqa: E402


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # the verifier's lines unwrapped


def _speed(p50_b1: float, speedup: float | None = None) -> dict:
    row = {"batch": 1, "model": {"p50_ms": p50_b1, "p90_ms": p50_b1, "p99_ms": p50_b1}, "speedup": speedup}
    return {"batches": [row]}


def test_budget_text_and_section():
    assert parse_budget("5") == (5.0, 1) and parse_budget("12.5@8") == (12.5, 8)
    for bad in ("", "fast", "0", "5@0", "-1", "5@x"):
        with pytest.raises(PwdeployError, match="--max-latency-ms"):
            parse_budget(bad)
    with pytest.raises(PwdeployError, match="--with-original"):
        manifest_section([], 1.5, None)
    assert manifest_section([], None, None) is None
    section = manifest_section(["3@8", "2"], 1.2, "original.onnx")
    assert section["budgets"] == [{"max_ms": 2.0, "batch": 1}, {"max_ms": 3.0, "batch": 8}]


def test_checks_pass_fail_and_fail_closed():
    section = manifest_section(["2", "3@8"], 1.5, "original.onnx")
    checks = check_latency(section, _speed(1.0, speedup=1.2))
    by_name = {c.name: c for c in checks}
    assert by_name["latency b1"].passed and by_name["latency b1"].measured == 1.0
    assert not by_name["latency b8"].passed and by_name["latency b8"].reason == "not measured"  # fail-closed
    assert not by_name["speed-up b1"].passed and "below the 1.50x" in by_name["speed-up b1"].reason
    assert [c.passed for c in check_latency(manifest_section(["0.5"], None, None), _speed(1.0))] == [False]
    not_timed = check_latency(manifest_section(["2"], None, None), None)  # --speed-seconds 0: nothing measured
    assert [(c.passed, c.reason) for c in not_timed] == [(False, "not measured")]
    lines = table_lines(checks, 10)
    assert any(ln.split()[:2] == ["latency", "b1"] and "PASSED" in ln for ln in lines)
    assert any("speed-up b1" in ln and "FAILED" in ln and ">= 1.50x" in ln for ln in lines)


def test_core_times_until_stable_and_alternates():
    settings = Settings(warmup=2, min_runs=10, max_runs=400, min_seconds=0.0, max_seconds=2.0, check_every=10)
    stats = time_until_stable(lambda: sum(range(2000)), 4, settings)
    assert stats.runs >= 10 and 0 < stats.p50_ms <= stats.p90_ms <= stats.p99_ms
    assert stats.throughput_ips == pytest.approx(4 * 1000.0 / stats.mean_ms)
    pair = time_pair(lambda: sum(range(20000)), lambda: sum(range(2000)), 1, settings)
    assert pair["rounds"] == pair["a"].runs == pair["b"].runs
    assert pair["speedup"] > 2  # b does a tenth of a's work: a clear speed-up, measured round by round


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_bundle_run(tmp_path_factory.getbasetemp())


def test_a_budget_that_holds_passes_and_one_that_does_not_fails(run, tmp_path, capsys):
    loose = package_run(run, tmp_path / "loose.tar.gz", quiet=True, with_original=True, max_latency_ms=["1000"])
    manifest = read_json(extract(loose, tmp_path / "x") / "manifest.json")
    assert manifest["latency"]["original"] == "original.onnx" and "original.onnx" in manifest["files"]
    result = verify_locally(loose, tmp_path / "w1")
    assert result["passed"] is True and [c["name"] for c in result["latency_gate"]] == ["latency b1"]
    speed = result["speed"]
    assert [row["batch"] for row in speed["batches"]] == [1, 8, 32]  # the bundle's declared batch sizes
    assert all(row["model"]["runs"] >= 30 and row["speedup"] > 0 for row in speed["batches"])
    assert speed["spinning"] == "off" and speed["runtime"]["runtime"] == "onnxruntime"
    assert result["device"]["python"] and result["device"]["onnxruntime_providers"]
    out = capsys.readouterr().out
    assert "latency on onnxruntime" in out and "x the original (" in out
    assert any(ln.split()[:2] == ["latency", "b1"] and ln.rstrip().endswith("PASSED") for ln in out.splitlines())

    tight = package_run(run, tmp_path / "tight.tar.gz", quiet=True, max_latency_ms=["0.0001@8"])
    result = verify_locally(tight, tmp_path / "w2")
    assert result["passed"] is False and result["gate"]["passed"] is True  # the groups are fine, the speed is not
    out = capsys.readouterr().out
    assert any(ln.split()[:2] == ["latency", "b8"] and "FAILED" in ln for ln in out.splitlines())
    assert "FAILED: latency b8 over the latency budget" in out


def test_package_refuses_bad_latency_options(run, tmp_path, capsys):
    assert main(["package", str(run), "-o", str(tmp_path / "a.tar.gz"), "--max-latency-ms", "fast"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--max-latency-ms 'fast'" in err
    assert main(["package", str(run), "-o", str(tmp_path / "b.tar.gz"), "--min-speedup", "1.5"]) == 2
    assert "--with-original" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.tar.gz"))


def test_host_verify_times_with_the_device_code(run, tmp_path, capsys):
    from run_fixture import copy_run

    from pwdeploy.verify import verify

    mine = copy_run(tmp_path, tmp_path / "run")  # the fixture's report.json is too small to render: no report update
    summary = verify(mine / "model.onnx", bootstrap=0, speed_seconds=1, update_report=False)
    speed = summary["artifacts"]["model.onnx"]["speed"]
    assert read_json(mine / "verify.json")["artifacts"]["model.onnx"]["speed"] == speed
    assert [row["batch"] for row in speed["batches"]] == [1, 8, 32] and speed["spinning"] == "off"
    assert all(row["original"]["p50_ms"] > 0 and row["speedup"] > 0 for row in speed["batches"])  # original.onnx
    assert "model.onnx: latency on onnxruntime" in capsys.readouterr().out
