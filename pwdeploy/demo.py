"""`make demo`: the whole road on the built-in synthetic data, in a few minutes on a laptop CPU.

Train a baseline, compress it at 75% fewer MACs three ways: the synthetic config's default (PW with
pwdeploy's group-balance extension), the paper's PW loss, and plain CE. Verify the exported default model per
group on ONNX Runtime, package it as a device bundle and run the bundle's own check.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.table import Table

from . import package
from .api import compress_model, train_baseline
from .errors import GateFailed
from .fsutil import write_json
from .progress import console
from .report import loss_label
from .rundir import RunDir
from .verify import verify

REDUCTION = 0.75
# name -> overrides; the first is the one verified and packaged (configs/synthetic.yaml's default loss).
ARMS = {"pw+gb": {"loss": "pw", "group_balanced": True}, "pw": {"loss": "pw", "group_balanced": False},
        "ce": {"loss": "ce"}}


def run_demo(out: str | Path, *, seed: int = 0, device: str = "auto") -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    baseline = out / "baseline.pt"
    console.rule("1/4 train a baseline on the synthetic data (no download)")
    train_baseline({"data": {"name": "synthetic"}, "seed": seed, "device": device}, baseline)

    runs = {}
    for name, overrides in ARMS.items():
        console.rule(f"2/4 compress with {name} at {REDUCTION:.0%} fewer MACs")
        runs[name] = compress_model(baseline, {"data": {"name": "synthetic"}, "seed": seed, "device": device,
                                               "prune": {"flops_reduction": REDUCTION}, **overrides},
                                    out / name.replace("+", "-"), overwrite=True, quiet=True)

    reports = {name: _report(path) for name, path in runs.items()}
    summary = compare_runs(reports)
    write_json(out / "comparison.json", summary)
    console.print(comparison_table(summary))
    for name, report in reports.items():
        console.print(f"  {name.upper()}: {loss_label(report)}")
    console.print(summary["sentence"])

    shipped = next(iter(ARMS))
    console.rule(f"3/4 verify the exported {shipped.upper()} model (ONNX Runtime) per group")
    verified = verify(runs[shipped])
    if verified["failure"]:
        raise GateFailed(verified["failure"])
    console.rule("4/4 package a device bundle and run its self-check (as the device would: no torch)")
    summary["bundle"] = {"path": str(out / f"{shipped.replace('+', '-')}-bundle.tar.gz"), "device_check_passed": False}
    try:
        package_and_check(runs[shipped], Path(summary["bundle"]["path"]))
        summary["bundle"]["device_check_passed"] = True
    finally:
        write_json(out / "comparison.json", summary)
    return summary


def package_and_check(run_dir: Path, bundle: Path) -> None:
    """Package ``run_dir`` and run the bundle's own verifier; a failure raises, so `make demo` exits non-zero."""
    package.package_run(run_dir, bundle)
    with tempfile.TemporaryDirectory() as tmp:
        passed = package.verify_locally(bundle, tmp)["passed"]
    console.print(f"bundle {bundle}: device-side check {'PASSED' if passed else 'FAILED'}")
    if not passed:
        raise GateFailed(f"the device-side check of {bundle} FAILED (details above)")


def _report(run_dir: Path) -> dict:
    return RunDir.open(run_dir).report


def compare_runs(reports: dict[str, dict]) -> dict:
    """Per group: original accuracy, and each loss's pruned accuracy and change."""
    any_report = next(iter(reports.values()))
    original = any_report["metrics"]["original"]
    groups = list(original["groups"]) + ["overall"]

    def acc(metrics, group):
        return (metrics["overall"] if group == "overall" else metrics["groups"][group])["accuracy"]

    rows = {g: {"original": acc(original, g),
                **{loss: acc(r["metrics"]["pruned"], g) for loss, r in reports.items()}} for g in groups}
    drops = {loss: r["changes"]["pruned"]["worst_group_drop"] for loss, r in reports.items()}
    macs = {loss: r["flops_reduction"] for loss, r in reports.items()}
    sentence = (f"Worst-group drop at {REDUCTION:.0%} fewer MACs: "
                + ", ".join(f"{loss.upper()} {round(d['points'], 1) or 0.0:.1f} points ({d['group']})"  # no "-0.0"
                           for loss, d in drops.items())
                + ".")
    return {"flops_reduction": macs, "accuracy": rows, "worst_group_drop": drops, "sentence": sentence}


def comparison_table(summary: dict) -> Table:
    losses = [k for k in next(iter(summary["accuracy"].values())) if k != "original"]
    table = Table(title="per-group accuracy (%): original vs pruned, test split")
    table.add_column("group")
    table.add_column("original", justify="right")
    for loss in losses:
        table.add_column(f"{loss.upper()} pruned", justify="right")
        table.add_column(f"Δ {loss.upper()}", justify="right")
    for group, row in summary["accuracy"].items():
        cells = [group, f"{row['original']:.2f}"]
        for loss in losses:
            cells += [f"{row[loss]:.2f}", f"{row[loss] - row['original']:+.2f}"]
        table.add_row(*cells)
    return table
