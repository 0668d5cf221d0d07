"""Per-group INT8 analysis of a run directory: the sensitivity table (`pwdeploy analyze RUN --int8`) and the
group-aware mixed precision of `--target *-int8 --protect-groups`.

Both use the run's own calibration (``calibration_ranges.json``, checked fresh against model.onnx) and the
weight bits of its INT8 artifact, score variants on the validation split against the fp32 model.onnx on ONNX
Runtime, and record what they found in report.json.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pwdeploy import rundir
from pwdeploy.calibration import check_fresh
from pwdeploy.calibration.latency import compare_latency
from pwdeploy.calibration.probe import Int8Probe, ProbeData, load_split, score_logits
from pwdeploy.calibration.protect import select_float_layers
from pwdeploy.calibration.sensitivity import plot_heatmap, rich_table, sensitivity
from pwdeploy.errors import PwdeployError
from pwdeploy.fsutil import read_json, sha256_file
from pwdeploy.gate import tolerance_for
from pwdeploy.progress import console as default_console, task
from pwdeploy.runners import run_batches
from pwdeploy.runners.onnxruntime_runner import OnnxRuntimeRunner
from pwdeploy.verification_set import FILENAME, load_verification_set

SENSITIVITY_PNG = "int8_sensitivity.png"
VALIDATION_SPLIT = "val"
MAX_VALIDATION_SAMPLES = 2000


def open_probe(run: Path, config: dict, *, method: str, weight_bits: int, tolerance: float | None = None,
               max_samples: int = MAX_VALIDATION_SAMPLES, provider: str = "cpu", activations: str = "int8"):
    """An Int8Probe on ``run``'s validation split with its recorded calibration ranges."""
    data = load_split(config, VALIDATION_SPLIT, max_samples=max_samples, seed=int(config.get("seed", 0)))
    return Int8Probe(run / rundir.MODEL_ONNX, run / rundir.CALIBRATION_RANGES, data, method=method,
                     weight_bits=weight_bits, tolerance=tolerance_for("int8") if tolerance is None else tolerance,
                     provider=provider, activations=activations)


def analyze_int8(run_dir, *, tolerance: float | None = None, max_samples: int = MAX_VALIDATION_SAMPLES,
                 provider: str = "cpu", console=None) -> dict:
    """Leave-one-in-float sensitivity of the run's INT8 model, per group on validation: rich table, heatmap PNG
    (int8_sensitivity.png) and report.json ``int8_sensitivity``. Returns the table."""
    console = console or default_console
    run_dir = rundir.RunDir.open(run_dir)
    run, config, report = run_dir.path, run_dir.config, run_dir.report
    method, bits, activations = _recorded_int8(run, report)
    with open_probe(run, config, method=method, weight_bits=bits, tolerance=tolerance, max_samples=max_samples,
                    provider=provider, activations=activations) as probe, task("INT8 sensitivity", total=len(probe.layers)) as bar:
        table = sensitivity(probe, on_layer=lambda _layer: bar.advance())
    plot_heatmap(table, run / SENSITIVITY_PNG)
    table["png"] = SENSITIVITY_PNG
    run_dir.update_report(lambda r: r.update(int8_sensitivity=table))
    console.print(rich_table(table))
    console.print(f"wrote {SENSITIVITY_PNG} and report.json int8_sensitivity ({len(table['layers'])} layers, "
                  f"{table['data']['n']} validation images)")
    return table


def _recorded_int8(run: Path, report: dict) -> tuple:
    """(calibration method, weight bits, activation type) of the run's INT8 export; its ranges must belong to
    model.onnx."""
    calib, ranges = run / rundir.CALIBRATION_JSON, run / rundir.CALIBRATION_RANGES
    if not calib.is_file() or not ranges.is_file():
        raise PwdeployError(f"{run} has no INT8 calibration: run 'pwdeploy export {run} --target onnx-int8' first")
    provenance = read_json(calib)
    check_fresh(provenance, sha256_file(run / rundir.MODEL_ONNX))
    if provenance.get("ranges_sha256") != sha256_file(ranges):
        raise PwdeployError(f"{rundir.CALIBRATION_RANGES} does not match {rundir.CALIBRATION_JSON}: re-export with "
                            f"'pwdeploy export {run} --target onnx-int8 --recalibrate'")
    record = report.get("artifacts", {}).get(rundir.INT8_ONNX, {})
    quantization = record.get("quantization", {})
    return provenance["method"], int(quantization.get("weight_bits", 7)), quantization.get("activation_type", "int8")


def protect_int8(run: Path, config: dict, out: Path, *, method: str, weight_bits: int, budget: int,
                 console, provider: str = "cpu", activations: str = "int8") -> dict:
    """Choose the float layers (pwdeploy.calibration.protect), write the mixed Q/DQ model to ``out`` and return the record:
    chosen layers, per-group results on validation and test, ONNX Runtime latency against plain INT8 and fp32."""
    with open_probe(run, config, method=method, weight_bits=weight_bits, provider=provider,
                    activations=activations) as probe, \
            tempfile.TemporaryDirectory(prefix="pwdeploy-protect-") as tmp:
        console.print(f"group protection: scoring INT8 variants per group on {probe.data.describe()['n']} "
                      f"validation images ({len(probe.layers)} weighted layers, budget {budget} in float)")
        protection = select_float_layers(probe, budget=budget, on_step=lambda s: console.print(
            f"  kept {s['added']} in float: worst group {s['worst_group']} {s['worst_change']:+.2f} points vs fp32"))
        plain = Path(tmp) / "plain.onnx"
        probe.quantize((), plain)
        probe.quantize(protection.float_layers, out)
        record = protection.to_dict()
        record["validation"]["fp32_reference"] = "model.onnx on ONNX Runtime, same images"
        record["validation"]["data"] = probe.data.describe()
        record["test"] = _test_results(run, {"plain_int8": plain, "mixed": out})
        shape = tuple(config["input_shape"])
        record["latency"] = compare_latency({"fp32": run / rundir.MODEL_ONNX, "plain_int8": plain, "mixed": out},
                                            shape, provider=provider)
    _print_protection(record, console)
    return record


def _test_results(run: Path, models: dict) -> dict | None:
    """Per-group results of ``models`` on the run's verification set (test split) against the pruned PyTorch
    reference, with the INT8 gate; None when the run has no verification set."""
    if not (run / FILENAME).is_file():
        return None
    vs = load_verification_set(run / FILENAME)
    if "pruned" not in vs.logits:
        return None
    data = ProbeData(vs.images, vs.labels, vs.groups, list(vs.group_names), "test")
    out = {"data": {**data.describe(), "source": FILENAME}, "reference": "pruned.pt (PyTorch logits)"}
    for label, path in models.items():
        with OnnxRuntimeRunner(path, provider="cpu") as runner:
            logits = run_batches(runner, vs.images, batch_size=256)
        out[label] = score_logits(logits, vs.logits["pruned"], data, tolerance=tolerance_for("int8")).to_dict()
    return out


def _print_protection(record: dict, console) -> None:
    val = record["validation"]
    lat = record["latency"]["models"]
    layers = ", ".join(record["float_layers"]) or "none"
    verdict = "[green]every group within tolerance[/]" if record["passed_on_validation"] else \
        "[bold red]a group is still outside the tolerance (budget reached)[/]"
    console.print(f"group protection: {len(record['float_layers'])} of {record['layers_total']} layers in float "
                  f"({layers}); validation worst group {val['plain_int8']['worst_group']} "
                  f"{val['plain_int8']['worst_change']:+.2f} -> {val['mixed']['worst_group']} "
                  f"{val['mixed']['worst_change']:+.2f} points vs fp32: {verdict}")
    console.print(f"  ONNX Runtime latency (batch 1): fp32 {lat['fp32']['median_ms']:.3f} ms, plain INT8 "
                  f"{lat['plain_int8']['median_ms']:.3f} ms, mixed {lat['mixed']['median_ms']:.3f} ms "
                  f"({lat['mixed']['median_ms'] / lat['plain_int8']['median_ms']:.2f}x plain INT8)")
    test = record.get("test")
    if test:
        console.print(f"  test split (verification set): plain INT8 worst {test['plain_int8']['worst_group']} "
                      f"{test['plain_int8']['worst_change']:+.2f}, mixed worst {test['mixed']['worst_group']} "
                      f"{test['mixed']['worst_change']:+.2f} points vs the PyTorch reference")
