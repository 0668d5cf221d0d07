"""Typed report records: the previous schema still loads, the records round-trip, one home for each fact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pwdeploy import rundir
from pwdeploy.errors import PwdeployError
from pwdeploy.records import Change, Report, VerificationRecord, schema_table, summarize, to_json

FIXTURE = Path(__file__).parent / "fixtures" / "report_v1"  # written by the schema-1 code (tiny onnx-int8 run)


def _v1() -> dict:
    return json.loads((FIXTURE / rundir.REPORT).read_text())


def test_a_report_of_the_previous_schema_loads_as_typed_records():
    old = _v1()
    assert old["schema"] == "pwdeploy.report/1" and "latency_ms" in old
    report = rundir.parse_report(old)
    assert isinstance(report, Report) and report.method == "magnitude"
    assert report.macs.original == old["macs"]["original"] and report.params.pruned == old["params"]["pruned"]
    assert report.latency.original == old["latency_ms"]["original"]  # one home now: speed.latency
    assert report.latency.speedup == old["speed"]["latency"]["batch_1"]["speedup"]
    int8 = report.artifacts["model.int8.onnx"]
    assert int8.precision == "int8" and int8.calibration["n"] == old["artifacts"]["model.int8.onnx"]["calibration"]["n"]
    assert isinstance(report.verification["onnx-int8"], VerificationRecord)
    assert report.verification["onnx-int8"].failed_groups == []
    assert isinstance(report.changes["pruned"], Change)
    assert report.worst_group["pruned"].group == old["worst_group"]["pruned"]["group"]
    assert report.prune_budget == old["prune_budget"]


def test_the_upgrade_changes_nothing_but_the_duplicate_latency():
    old = _v1()
    new = to_json(rundir.parse_report(old))
    assert set(old) - set(new) == {"schema", "latency_ms"} and set(new) <= set(old)
    assert all(new[key] == old[key] for key in new)


def test_a_run_directory_of_the_previous_schema_is_read_and_rewritten_in_the_new_one(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    (run / rundir.COMPLETE).write_text("fixture\n")
    opened = rundir.RunDir.open(run)
    assert opened.report["schema"] == rundir.REPORT_SCHEMA and "latency_ms" not in opened.report
    opened.update_record(lambda r: r.details.update(note="kept"))
    written = json.loads((run / rundir.REPORT).read_text())
    assert written["schema"] == "pwdeploy.report/2" and written["note"] == "kept"
    assert written["speed"]["latency"]["batch_1"] == _v1()["speed"]["latency"]["batch_1"]
    assert (run / rundir.REPORT_MD).is_file()


def test_an_unknown_schema_is_refused_in_one_line():
    with pytest.raises(PwdeployError, match="pwdeploy.report/9"):
        rundir.parse_report({**_v1(), "schema": "pwdeploy.report/9"})


def test_summaries_are_recomputed_from_the_metrics():
    old = _v1()
    changes, worst = summarize(old["metrics"])
    assert to_json(changes) == old["changes"] and to_json(worst) == old["worst_group"]


def test_the_schema_table_lists_every_report_field():
    table = schema_table()
    for name in ("macs", "speed", "artifacts", "verification", "changes", "worst_group", "prune_budget"):
        assert f"| `{name}` |" in table


def test_a_fresh_run_reads_back_as_records(tiny_run):
    import torch

    run = rundir.RunDir.open(tiny_run)
    report = run.read_report()
    assert report.macs.pruned < report.macs.original and report.latency.pruned > 0
    assert report.artifacts["model.onnx"].role == "pruned" and report.targets == ["onnx-fp32"]
    drop = report.changes["pruned"].worst_group_drop
    metrics = report.metrics
    assert drop.points == pytest.approx(max(metrics["original"]["groups"][g]["accuracy"]
                                            - metrics["pruned"]["groups"][g]["accuracy"] for g in report.group_names))
    provenance = run.provenance()
    assert provenance.versions.torch == torch.__version__ and provenance.input_shape == [3, 16, 16]
    assert provenance.model_source.kind == "checkpoint"
