"""Calibration study: does the way the INT8 calibration set is drawn change which group pays?

    python benchmarks/calibration_study.py --quick          # a few CPU minutes (make bench)
    python benchmarks/calibration_study.py                  # more sizes and seeds
    python benchmarks/calibration_study.py --run RUN_DIR    # reuse a finished synthetic run
    python benchmarks/calibration_study.py --ort-provider cuda --out-name calibration_study_cuda   # on a GPU

A pruned SmallCNN on the built-in synthetic data (rare minority group) is quantized with ONNX Runtime's
``quantize_static`` (pwdeploy's settings) from calibration sets drawn three ways from the training split:
``random`` (uniform, so groups in their data proportions), ``stratified`` (equal shares per group: pwdeploy's
default) and ``oversampled`` (each non-majority group 3× the majority's share), at several sizes and seeds, with
the minmax / entropy / percentile calibrators, with 7-bit (pwdeploy's default) and full 8-bit weights. Every
INT8 model runs on the test split twice: with ONNX Runtime's fused INT8 kernels (what deploys on this runtime)
and with graph optimisations off, where the Q/DQ graph is evaluated as written in float (the quantization
itself, without CPU kernel effects such as saturating 16-bit sums). Reported per group: accuracy change against
the fp32 model on the same images, mean over seeds with a 95% bootstrap interval over seeds.
Results: benchmarks/results/calibration_study.{json,md,png}.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

RESULTS = ROOT / "benchmarks" / "results"
STRATEGIES = ("random", "stratified", "oversampled")
METHODS = ("minmax", "entropy", "percentile")
OVERSAMPLE = 3.0  # share of each non-majority group relative to the majority's
RUNTIMES = ("fused", "emulated")  # ORT with its INT8 kernels / Q/DQ evaluated in float (optimisations off)
SETTINGS = {
    "quick": {"sizes": (16, 128), "seeds": 3, "data": {"n": 2000, "size": 16, "minority_fraction": 0.06},
              "baseline_epochs": 12, "retrain_epochs": 2, "method": "magnitude"},
    "full": {"sizes": (16, 64, 256), "seeds": 5, "data": {}, "baseline_epochs": 20, "retrain_epochs": 3,
             "method": "taylor"},
}


def build_run(folder: Path, settings: dict) -> Path:
    """Train and compress (75% of MACs, the synthetic config's PW + group balance) a SmallCNN."""
    from pwdeploy.api import compress_model, train_baseline

    data = {"name": "synthetic", "options": settings["data"]}
    train_baseline({"data": data, "baseline": {"epochs": settings["baseline_epochs"]}}, out=folder / "base.pt")
    return compress_model(folder / "base.pt", {"data": data, "prune": {"method": settings["method"]},
                                               "retrain": {"epochs": settings["retrain_epochs"]}},
                          out=folder / "run", quiet=True)


def draw(strategy: str, groups: np.ndarray, names: list, size: int, seed: int):
    from pwdeploy.calibration import stratified_sample
    from pwdeploy.calibration.sampler import random_sample

    if strategy == "random":
        return random_sample(groups, names, size, seed=seed)
    if strategy == "stratified":
        return stratified_sample(groups, names, size, seed=seed)
    majority = names[int(np.bincount(groups, minlength=len(names)).argmax())]
    shares = {g: (1.0 if g == majority else OVERSAMPLE) for g in names}
    return stratified_sample(groups, names, size, seed=seed, shares=shares)


class Evaluator:
    """Runs an ONNX model on the test images with or without ORT's graph optimisations (fused INT8 kernels)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, groups: np.ndarray, names: list, provider: str):
        self.images, self.labels, self.groups, self.names, self.provider = images, labels, groups, names, provider

    def logits(self, path: Path, runtime: str = "fused") -> np.ndarray:
        import onnxruntime as ort

        from pwdeploy.runners.onnxruntime_runner import resolve_providers

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if runtime == "emulated":
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=resolve_providers(self.provider))
        name = session.get_inputs()[0].name
        return np.concatenate([session.run(None, {name: self.images[i:i + 512]})[0]
                               for i in range(0, len(self.images), 512)])

    def changes(self, logits: np.ndarray, reference: np.ndarray) -> dict:
        from pwdeploy.metrics import predict

        right, ref_right = predict(logits) == self.labels, predict(reference) == self.labels
        return {g: float(100.0 * (right[self.groups == i].mean() - ref_right[self.groups == i].mean()))
                for i, g in enumerate(self.names) if (self.groups == i).any()}


def study(run: Path, settings: dict, *, provider: str, methods, console) -> list:
    """One cell per (method, strategy, size, seed, weight bits, runtime): per-group change vs fp32."""
    from pwdeploy.calibration.quantize import IndexedCalibrationReader, prepare, quantize_int8
    from pwdeploy.exporters.onnx_export import INPUT_NAME
    from pwdeploy.data import DataSpec, create_dataset
    from pwdeploy.fsutil import read_json

    config = read_json(run / "config.json")
    spec = DataSpec.from_dict(config["data"])
    train, test = create_dataset(spec, "train"), create_dataset(spec, "test")
    names = list(train.group_names)
    test_images = np.stack([test.load_image(i) for i in range(len(test))]).astype(np.float32)
    ev = Evaluator(test_images, np.asarray(test.labels), np.asarray(test.groups), names, provider)
    reference = ev.logits(run / "model.onnx")
    cells, grid = [], list(itertools.product(methods, STRATEGIES, settings["sizes"], range(settings["seeds"])))
    with tempfile.TemporaryDirectory(prefix="calib-study-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        prepare(run / "model.onnx", prepared)
        for k, (method, strategy, size, seed) in enumerate(grid):
            sample = draw(strategy, np.asarray(train.groups), names, size, seed)
            ranges, started = Path(tmp) / f"ranges-{k}.json", time.time()
            for bits in (7, 8):  # the ranges are calibrated once, then reused for the other weight width
                reader = IndexedCalibrationReader(train.load_image, sample.indices, INPUT_NAME, batch_size=32)
                out = Path(tmp) / "int8.onnx"
                quantize_int8(run / "model.onnx", out, reader, method=method, ranges_cache=ranges,
                              full_range_weights=bits == 8, prepared=prepared)
                for runtime in RUNTIMES:
                    cells.append({"method": method, "strategy": strategy, "size": size, "seed": seed,
                                  "weight_bits": bits, "runtime": runtime, "calibration_counts": sample.counts,
                                  "change": ev.changes(ev.logits(out, runtime), reference)})
            console.print(f"[{k + 1}/{len(grid)}] {method} {strategy} {size} seed {seed}: "
                          f"{time.time() - started:.1f} s")
    return cells


# --- aggregation and output ------------------------------------------------------------------------------------

def aggregate(cells: list, names: list) -> list:
    """One series per (method, bits, runtime, strategy, size): per-group mean change over seeds with its 95%
    bootstrap interval, and the mean calibration count per group."""
    from fairness_stats import bootstrap_mean

    keyf = ("method", "weight_bits", "runtime", "strategy", "size")
    series = {}
    for cell in cells:
        series.setdefault(tuple(cell[k] for k in keyf), []).append(cell)
    out = []
    for key, members in sorted(series.items(), key=lambda kv: tuple(str(v) for v in kv[0])):
        entry = dict(zip(keyf, key))
        entry["seeds"] = len(members)
        entry["change"] = {g: bootstrap_mean([c["change"].get(g) for c in members]) for g in names}
        entry["worst"] = bootstrap_mean([min(c["change"].values()) for c in members])
        entry["calibration_counts"] = {g: float(np.mean([c["calibration_counts"][g] for c in members]))
                                       for g in names}
        out.append(entry)
    return out


def _ci(entry: dict) -> str:
    if entry["mean"] is None:
        return "-"
    return f"{entry['mean']:+.2f} [{entry['lo']:+.2f}, {entry['hi']:+.2f}]"


def markdown(meta: dict, series: list, names: list) -> str:
    lines = [f"# Calibration study ({meta['mode']}, ONNX Runtime {meta['onnxruntime']} {meta['provider']})", "",
             f"Model: {meta['model']}. Test split: {meta['test']}. Accuracy change of the INT8 model against the fp32 "
             "model on the same images, in points: mean over seeds [95% bootstrap interval over seeds]. "
             "`fused`: ONNX Runtime with its INT8 kernels; `emulated`: graph optimisations off, the Q/DQ graph "
             "computed in float (the quantization alone).", ""]
    for (bits, runtime), group in itertools.groupby(sorted(series, key=lambda s: (s["weight_bits"], s["runtime"])),
                                                    key=lambda s: (s["weight_bits"], s["runtime"])):
        lines += [f"## {bits}-bit weights, {runtime}", "",
                  "| method | strategy | size | calib. per group | " + " | ".join(names) + " | worst group |",
                  "|---|---|---:|---|" + "---:|" * (len(names) + 1)]
        for s in sorted(group, key=lambda s: (s["method"], s["size"], STRATEGIES.index(s["strategy"]))):
            counts = ", ".join(f"{s['calibration_counts'][g]:.0f}" for g in names)
            lines.append(f"| {s['method']} | {s['strategy']} | {s['size']} | {counts} | "
                         + " | ".join(_ci(s["change"][g]) for g in names) + f" | {_ci(s['worst'])} |")
        lines.append("")
    return "\n".join(lines)


def plot(series: list, names: list, path: Path, title: str) -> None:
    """Rows: weight bits × runtime; columns: calibration method; x: calibration size; y: the smallest group's
    change (solid, with intervals) and the largest group's (dashed); one colour per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted({(s["weight_bits"], s["runtime"]) for s in series})
    methods = [m for m in METHODS if any(s["method"] == m for s in series)]
    minority, majority = names[0], names[-1]  # names come sorted by test-split size, smallest first
    fig, axes = plt.subplots(len(rows), len(methods), figsize=(3.4 * len(methods), 2.6 * len(rows)), squeeze=False,
                             sharex=True, sharey=True)  # one scale: panels compare at a glance
    colours = dict(zip(STRATEGIES, ("tab:grey", "tab:blue", "tab:orange")))
    for (r, row), (c, method) in itertools.product(enumerate(rows), enumerate(methods)):
        ax = axes[r][c]
        for strategy in STRATEGIES:
            pts = sorted((s for s in series if (s["weight_bits"], s["runtime"]) == row and s["method"] == method
                          and s["strategy"] == strategy), key=lambda s: s["size"])
            x = [s["size"] for s in pts]
            m = [s["change"][minority] for s in pts]
            err = [[e["mean"] - e["lo"] for e in m], [e["hi"] - e["mean"] for e in m]]
            ax.errorbar(x, [e["mean"] for e in m], yerr=err, color=colours[strategy], marker="o", ms=3, capsize=2,
                        label=f"{strategy} ({minority})")
            ax.plot(x, [s["change"][majority]["mean"] for s in pts], color=colours[strategy], ls="--", lw=0.8)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{method}, {row[0]}-bit, {row[1]}", fontsize=8)
        ax.tick_params(labelsize=7)
        if c == 0:
            ax.set_ylabel("Δ acc vs fp32 (points)", fontsize=8)
        if r == len(rows) - 1:
            ax.set_xlabel("calibration images", fontsize=8)
    axes[0][0].legend(fontsize=6, loc="lower right")
    fig.suptitle(title + f" (dashed: {majority})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data, 2 sizes, 3 seeds: a few CPU minutes")
    parser.add_argument("--run", type=Path, help="a finished synthetic run directory to use instead of training one")
    parser.add_argument("--methods", default=",".join(METHODS), help="calibration methods, comma separated")
    parser.add_argument("--seeds", type=int, help="calibration draws per cell (default 3 quick, 8 full)")
    parser.add_argument("--ort-provider", default="cpu", help="cpu, or cuda with onnxruntime-gpu installed")
    parser.add_argument("--out-name", help="result file stem (default calibration_study, _quick with --quick)")
    parser.add_argument("--replot", action="store_true", help="rewrite the .md and .png from the existing .json")
    return parser.parse_args(argv)


def write_outputs(stem: str, meta: dict, series: list, cells: list, names: list) -> None:
    from pwdeploy.fsutil import write_json, write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / f"{stem}.json", {"meta": meta, "names": names, "series": series, "cells": cells})
    write_text(RESULTS / f"{stem}.md", markdown(meta, series, names))
    plot(series, names, RESULTS / f"{stem}.png", f"INT8 calibration per group ({meta['mode']}, {meta['provider']})")


def main(argv=None) -> int:
    import onnxruntime

    from rich.console import Console

    from pwdeploy.fsutil import read_json
    from pwdeploy.report import loss_tag

    args = parse_args(argv)
    console = Console()
    stem = args.out_name or ("calibration_study_quick" if args.quick else "calibration_study")
    if args.replot:
        saved = read_json(RESULTS / f"{stem}.json")
        names = saved.get("names") or [n for n in saved["series"][0]["change"]]
        write_outputs(stem, saved["meta"], saved["series"], saved["cells"], names)
        console.print(f"rewrote benchmarks/results/{stem}.md/.png")
        return 0
    settings = dict(SETTINGS["quick" if args.quick else "full"])
    if args.seeds:
        settings["seeds"] = args.seeds
    methods = [m for m in args.methods.split(",") if m]
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="calib-study-run-") as tmp:
        run = args.run or build_run(Path(tmp), settings)
        console.print(f"model ready in {time.time() - started:.0f} s: {run}")
        report, config = read_json(run / "report.json"), read_json(run / "config.json")
        cells = study(run, settings, provider=args.ort_provider, methods=methods, console=console)
    test_n = report["metrics"]["original"]["groups"]
    names = sorted(report["group_names"], key=lambda g: test_n[g]["n"])
    series = aggregate(cells, names)
    meta = {"mode": "quick" if args.quick else "full", "provider": args.ort_provider,
            "onnxruntime": onnxruntime.__version__, "seconds": round(time.time() - started, 1),
            "model": f"SmallCNN, {report['method']} {loss_tag(report)}, {100 * report['flops_reduction']:.0f}% MACs "
                     f"removed, data {config['data']}", "model_built_here": args.run is None,
            "test": ", ".join(f"{g} {v['n']}" for g, v in test_n.items()), "settings": settings,
            "strategies": STRATEGIES, "oversample": OVERSAMPLE}
    write_outputs(stem, meta, series, cells, names)
    console.print(f"wrote benchmarks/results/{stem}.json/.md/.png in {meta['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
