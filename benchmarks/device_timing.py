"""Does the device verifier's latency agree with `make bench`'s on the same model and CPU?

    python benchmarks/device_timing.py            # resnet18 @224 (random weights) + the test fixture's bundle
    python benchmarks/device_timing.py --quick    # resnet18 @112, fewer rounds

Two comparisons, each alternated round by round in this one process (bench, device, bench, device, ...), so
load changes on a shared machine hit both sides; the ratio is taken per round and its median reported:
1. resnet18, on the same ONNX file: pwdeploy.device.speed.time_onnx (the function the device verifier times
   with: fresh session, spinning off, warm-up, runs until p50/p90/p99 settle; p50 compared) against the two
   timings `make bench` runs: benchmarks/speedup.py's ``time_table`` (TimedSession, spinning off, median;
   batch 1 and 8) and benchmarks/latency.py's ``time_artifact`` (OnnxRuntimeRunner defaults, spinning on,
   median batch-1 latency);
2. a real bundle (the test fixture's SmallCNN): the whole device path, ``package`` + the trust anchor's
   ``verify`` in a subprocess with torch blocked, its recorded batch-1 p50, against ``time_artifact`` on the
   bundle's model.onnx.
Results: benchmarks/results/device_timing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

RESULTS = ROOT / "benchmarks" / "results" / "device_timing.json"


def _summary(pairs: list) -> dict:
    ratios = [d / b for b, d in pairs]
    return {"rounds": len(pairs), "bench_ms": [round(b, 4) for b, _ in pairs], "device_ms": [round(d, 4) for _, d in pairs],
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "bench_median_ms": statistics.median(b for b, _ in pairs),
            "device_median_ms": statistics.median(d for _, d in pairs)}


def resnet(size: int, rounds: int, seconds: float, threads: int) -> dict:
    """Per round, in turn: speedup.py's time_table, latency.py's time_artifact, the device's time_onnx."""
    import torch
    import torchvision

    from latency import time_artifact
    from speedup import time_table
    from pwdeploy.device.speed import time_onnx
    from pwdeploy.exporters.onnx_export import export_onnx

    torch.manual_seed(0)
    shape = (3, size, size)
    out = {}
    with tempfile.TemporaryDirectory(prefix="pwdeploy-devtime-") as tmp:
        path = export_onnx(torchvision.models.resnet18(num_classes=10).eval(), Path(tmp) / "resnet18.onnx", shape)
        images = np.random.default_rng(0).standard_normal((8, *shape)).astype(np.float32)
        sides = {"speedup.py": [], "latency.py": []}
        for _ in range(rounds):
            for batch in (1, 8):
                device = time_onnx(str(path), None, images, [batch], 2 * seconds, provider="cpu")["batches"][0]
                table = time_table({"m": path}, shape, batch, threads, rounds=max(10, int(20 / batch)))["m"]
                sides["speedup.py"].append((batch, table["median_ms"], device["model"]["p50_ms"]))
            bench = time_artifact(path, shape, batch=1, seconds=seconds, threads=threads)["latency_ms"]
            device = time_onnx(str(path), None, images, [1], 2 * seconds, provider="cpu")["batches"][0]["model"]
            sides["latency.py"].append((1, bench, device["p50_ms"]))
            print(f"resnet18@{size}: " + "; ".join(f"{k} b{b} {x:.2f} ms vs device p50 {d:.2f} ms"
                                                   for k, v in sides.items() for b, x, d in v[-2 if k == 'speedup.py' else -1:]),
                  flush=True)
        for name, rows in sides.items():
            for batch in sorted({b for b, _, _ in rows}):
                out[f"{name} b{batch}"] = _summary([(x, d) for b, x, d in rows if b == batch])
    return dict(out, model=f"resnet18 @{size}, random weights", threads=threads,
                how="speedup.py: TimedSession (spinning off) + time_alternating median; latency.py: OnnxRuntimeRunner "
                    "(spinning on) median; device: pwdeploy.device.speed.time_onnx p50")


def bundle(rounds: int, seconds: float, threads: int) -> dict:
    from latency import time_artifact
    from pwdeploy.package import package_run, verify_locally
    from run_fixture import tiny_bundle_run

    with tempfile.TemporaryDirectory(prefix="pwdeploy-devtime-") as tmp:
        run = tiny_bundle_run(Path(tmp))
        archive = package_run(run, Path(tmp) / "b.tar.gz", quiet=True)
        shape = tuple(json.loads((run / "config.json").read_text())["input_shape"])
        pairs = []
        for i in range(rounds):
            bench = time_artifact(run / "model.onnx", shape, batch=1, seconds=seconds, threads=threads)["latency_ms"]
            result = verify_locally(archive, Path(tmp) / f"w{i}", echo=False)
            device = result["speed"]["batches"][0]["model"]["p50_ms"]
            pairs.append((bench, device))
            print(f"bundle SmallCNN: bench {bench:.4f} ms, device verify p50 {device:.4f} ms", flush=True)
    return dict(_summary(pairs), model="test fixture SmallCNN (16 px), full package + anchor verify", threads=threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    rounds, seconds, size = (3, 1.0, 112) if args.quick else (7, 2.0, 224)
    results = {"resnet18": resnet(size, rounds, seconds, args.threads), "bundle": bundle(rounds, seconds, args.threads)}
    rows = {f"resnet18 {k}": v for k, v in results["resnet18"].items() if isinstance(v, dict)}
    rows["bundle latency.py b1"] = results["bundle"]
    for name, r in rows.items():
        print(f"{name}: device/bench median ratio {r['ratio_median']:.3f} (range {r['ratio_min']:.3f}-"
              f"{r['ratio_max']:.3f}) over {r['rounds']} rounds; medians {r['bench_median_ms']:.4f} vs "
              f"{r['device_median_ms']:.4f} ms")
    if not args.quick:
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
