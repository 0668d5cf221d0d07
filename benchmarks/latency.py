"""ONNX Runtime CPU latency and throughput of original vs pruned vs fp16 vs INT8, measured in one run.

    python benchmarks/latency.py            # resnet18 @224 (random weights) + the synthetic SmallCNN
    python benchmarks/latency.py --quick    # smaller synthetic data, shorter timing windows

Two models:
- torchvision resnet18 at 224×224, random weights, pruned 75% of MACs by weight magnitude (no training: only
  its speed means anything; its INT8 scales come from random calibration images).
- the synthetic SmallCNN trained and compressed by pwdeploy itself (PW loss), whose per-group accuracy on
  the verification set is real and is shown for every artifact.

Every artifact is timed in this one process on the same cores, so the ratios compare like with like.
Results: a table per model on the terminal and benchmarks/results/latency.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results" / "latency.json"
ARTIFACTS = (("original", "original.onnx"), ("pruned", "model.onnx"), ("pruned fp16", "model.fp16.onnx"),
             ("pruned int8", "model.int8.onnx"))


def time_artifact(path: Path, shape: tuple, *, batch: int, seconds: float, threads: int) -> dict:
    """Median batch-1 latency and batch-``batch`` throughput of ``path`` on ONNX Runtime's CPU provider."""
    from pwdeploy.runners.onnxruntime_runner import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(path, provider="cpu", threads=threads)
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, *shape)).astype(np.float32)
    many = rng.standard_normal((batch, *shape)).astype(np.float32)
    for _ in range(3):  # warm-up: first runs allocate and pick kernels
        runner.run(one)
    runner.run(many)

    def measure(x, min_runs):
        times, start = [], time.perf_counter()
        while len(times) < min_runs or time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            runner.run(x)
            times.append(time.perf_counter() - t0)
        return times

    lat = measure(one, 10)
    thr = measure(many, 3)
    return {"latency_ms": 1000 * statistics.median(lat), "latency_runs": len(lat),
            "throughput_ips": batch / statistics.median(thr), "throughput_batch": batch, "throughput_runs": len(thr),
            "size_mb": path.stat().st_size / 1e6}


# --- models ----------------------------------------------------------------------------------------------------

def build_resnet18(folder: Path, *, calib: int) -> dict:
    """Random-weight resnet18 @224, pruned 75% (magnitude), exported fp32 / fp16 / INT8."""
    import torch

    from pwdeploy.calibration.quantize import IndexedCalibrationReader, quantize_int8
    from pwdeploy.exporters.fp16 import convert_fp16
    from pwdeploy.exporters.onnx_export import export_onnx
    from pwdeploy.fsutil import atomic_path
    from pwdeploy.models import create_model
    from pwdeploy.prune import prune_to_flops

    torch.manual_seed(0)
    shape = (3, 224, 224)
    model = create_model("torchvision:resnet18", 1000).eval()
    export_onnx(model, folder / "original.onnx", shape)
    result = prune_to_flops(model, torch.randn(1, *shape), method="magnitude", flops_reduction=0.75)
    model.eval()
    export_onnx(model, folder / "model.onnx", shape)
    convert_fp16(folder / "model.onnx", folder / "model.fp16.onnx")
    rng = np.random.default_rng(0)
    images = rng.standard_normal((calib, *shape)).astype(np.float32)
    reader = IndexedCalibrationReader(lambda i: images[i], np.arange(calib), "input", batch_size=8)
    with atomic_path(folder / "model.int8.onnx") as tmp:
        quantize_int8(folder / "model.onnx", tmp, reader, method="minmax")
    return {"shape": shape, "macs": {"original": result.macs_before, "pruned": result.macs_after},
            "note": "random weights: accuracy is meaningless; INT8 scales come from random calibration images"}


def build_synthetic(folder: Path, *, quick: bool, existing: Path | None = None) -> tuple:
    """pwdeploy's own pipeline on the synthetic data: train, compress (PW loss, magnitude, 75% of MACs), then
    the int8 and fp16 targets. ``existing``: a finished run (e.g. from `make demo`) is copied instead."""
    import shutil

    from pwdeploy.exporters.targets import export_target
    from pwdeploy.api import compress_model, train_baseline
    from pwdeploy.fsutil import read_json

    if existing is not None:
        run = Path(shutil.copytree(existing, folder / "run"))
    else:
        # quick: 16 px images and a larger minority so a short training still learns both groups
        options = {"n": 2000, "size": 16, "minority_fraction": 0.2} if quick else {}
        data = {"name": "synthetic", "options": options}
        train_baseline({"data": data, "model": {"arch": "smallcnn"}, "baseline": {"epochs": 8 if quick else 15}},
                       out=folder / "base.pt")
        run = compress_model(folder / "base.pt", {"data": data,
                                                  "prune": {"method": "magnitude", "flops_reduction": 0.75},
                                                  "retrain": {"epochs": 4 if quick else 8}}, out=folder / "run",
                             quiet=True)
    for target in ("onnx-int8", "onnx-fp16"):
        export_target(run, target)
    report, config = read_json(run / "report.json"), read_json(run / "config.json")
    return run, {"shape": tuple(config["input_shape"]), "macs": report["macs"]}


def group_accuracy(run: Path) -> dict:
    """Per-group accuracy of every artifact on the run's verification set (ONNX Runtime CPU)."""
    from pwdeploy.metrics import group_metrics, predict
    from pwdeploy.runners import run_batches
    from pwdeploy.runners.onnxruntime_runner import OnnxRuntimeRunner
    from pwdeploy.verification_set import load_verification_set

    vs = load_verification_set(run / "verification_set.npz")
    out = {}
    for label, file in ARTIFACTS:
        logits = run_batches(OnnxRuntimeRunner(run / file, provider="cpu"), vs.images, batch_size=256)
        out[label] = group_metrics(predict(logits), vs.labels, vs.groups, vs.group_names)
    return out


# --- report ----------------------------------------------------------------------------------------------------

def tables(name: str, timings: dict, accuracy: dict | None, note: str) -> list:
    """Speed table (ratios against the original) and, where accuracy is meaningful, a per-group table."""
    from rich import box
    from rich.table import Table

    base = timings["original"]
    speed = Table(title=f"{name}: ONNX Runtime CPU", caption=note, box=box.SIMPLE_HEAD)
    for col in ("artifact", "MB", "ms (b1)", "speed-up", f"img/s b{base['throughput_batch']}", "ratio"):
        speed.add_column(col, justify="left" if col == "artifact" else "right")
    for label, _ in ARTIFACTS:
        m = timings[label]
        speed.add_row(label, f"{m['size_mb']:.2f}", f"{m['latency_ms']:.2f}",
                      f"{base['latency_ms'] / m['latency_ms']:.2f}×", f"{m['throughput_ips']:.0f}",
                      f"{m['throughput_ips'] / base['throughput_ips']:.2f}×")
    if not accuracy:
        return [speed]
    groups = list(accuracy["original"]["groups"])
    acc = Table(title=f"{name}: accuracy per group (%)", box=box.SIMPLE_HEAD)
    acc.add_column("artifact")
    for g in groups + ["overall"]:
        acc.add_column(g, justify="right")
    for label, _ in ARTIFACTS:
        m = accuracy[label]
        acc.add_row(label, *[f"{m['groups'][g]['accuracy']:.1f}" for g in groups], f"{m['overall']['accuracy']:.1f}")
    return [speed, acc]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller synthetic data and shorter timing windows")
    parser.add_argument("--seconds", type=float, default=None, help="timing window per measurement")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                        else os.cpu_count(), help="ONNX Runtime intra-op threads (and torch threads)")
    parser.add_argument("--batch", type=int, default=32, help="throughput batch size")
    parser.add_argument("--skip-resnet18", action="store_true")
    parser.add_argument("--run", type=Path, default=None,
                        help="use this finished synthetic run (e.g. runs/demo/...) instead of training one")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (1.0 if args.quick else 3.0)

    os.environ.setdefault("PWDEPLOY_NO_PROGRESS", "1")
    import onnxruntime as ort
    import torch

    from pwdeploy.fsutil import write_json
    from pwdeploy.progress import console

    torch.set_num_threads(args.threads)
    results = {"onnxruntime": ort.__version__, "providers": ["CPUExecutionProvider"], "threads": args.threads,
               "cpu": platform.processor() or platform.machine(), "cpu_flags": _cpu_flags(),
               "seconds_per_measurement": seconds,
               # a shared machine: the load before timing tells how much to trust the absolute numbers
               "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "models": {}}
    with tempfile.TemporaryDirectory(prefix="pwdeploy-bench-") as tmp:
        tmp = Path(tmp)
        jobs = []
        if not args.skip_resnet18:
            (tmp / "resnet18").mkdir()
            console.print("building resnet18 @224 (random weights, pruned 75% by magnitude) ...")
            info = build_resnet18(tmp / "resnet18", calib=16 if args.quick else 64)
            jobs.append(("resnet18@224", tmp / "resnet18", info, None))
        console.print("compressing the synthetic model with pwdeploy (train, PW prune 75%, int8, fp16) ...")
        (tmp / "synthetic").mkdir()
        run, info = build_synthetic(tmp / "synthetic", quick=args.quick, existing=args.run)
        info["note"] = "per-group accuracy on the run's verification set (test split), ONNX Runtime CPU"
        jobs.append(("synthetic model", run, info, group_accuracy(run)))

        for name, folder, info, accuracy in jobs:
            timings = {label: time_artifact(folder / file, info["shape"], batch=args.batch, seconds=seconds,
                                            threads=args.threads) for label, file in ARTIFACTS}
            base = timings["original"]
            for m in timings.values():
                m["speedup_latency"] = base["latency_ms"] / m["latency_ms"]
                m["ratio_throughput"] = m["throughput_ips"] / base["throughput_ips"]
            results["models"][name] = {"input_shape": list(info["shape"]), "macs": info["macs"], "note": info["note"],
                                       "timings": timings, "group_accuracy": accuracy}
            for t in tables(name, timings, accuracy, info["note"]):
                console.print(t)
    write_json(args.out, results)
    console.print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}; "
                  "fp16 and INT8 speed on a CPU depends on its kernels (fp16 ops without one run through casts, INT8 "
                  "gains most with VNNI); a TensorRT engine's speed is measured on the device")
    return 0


def _cpu_flags() -> list:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags.split(":", 1)[1].split() if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni"))


if __name__ == "__main__":
    raise SystemExit(main())
