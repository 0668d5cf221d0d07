"""What the INT8 kernels of ONNX Runtime CPU need: pruned resnet18 (218x178) variants quantized several ways,
timed against the INT8-quantized original in one process (sides alternated), with per-op profiles.

    python benchmarks/int8_study.py            # 15 rounds at batch 8, 31 at batch 1
    python benchmarks/int8_study.py --quick    # fewer rounds

Pruned variants (magnitude, ~75% fewer MACs; random weights: only speed means anything):
- ``round16``: the onnx-int8 target's default (rounded to 16, global ranking);
- ``round16+uniform``: every group loses the same share;
- ``round32``: rounded to 32 (the multiple a wider INT8 kernel block would want);
- ``keep-stem``: rounded to 16, the stem conv's output group never pruned (its time barely follows its width).
Quantizations (ONNX Runtime ``quantize_static``, Q/DQ, minmax on random images):
- ``u8``: the onnx-int8 target's settings (UINT8 activations, per-channel 7-bit symmetric weights);
- ``u8+float-stem``: the same with the stem conv left in float (its 3 input channels make a poor INT8 kernel);
- ``u8+per-tensor``: one weight scale per tensor instead of per channel.
Each side's realized speed-up over the original quantized the same way, divided by its MAC ratio.
Results: tables on the terminal and benchmarks/results/int8_study.json.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("PWDEPLOY_NO_PROGRESS", "1")

RESULTS = ROOT / "benchmarks" / "results" / "int8_study.json"
SHAPE = (3, 218, 178)
QUANTIZATIONS = ("u8", "u8+float-stem", "u8+per-tensor")


def keep_stem(inner=None):
    """An allocation that never ranks the stem conv's output group for removal."""
    def allocation(remover, scores):
        scores = inner(remover, scores) if inner else scores
        return {name: (s + 1e9 if name == "conv1" else s) for name, s in scores.items()}
    return allocation


def pruned_variants(original, example) -> dict:
    from pwdeploy.config import PruneSettings
    from pwdeploy.prune import prune_to_flops
    from pwdeploy.prune.allocation import uniform_allocation

    out = {"original": original}
    for label, round_to, allocation in (("round16", 16, None), ("round16+uniform", 16, uniform_allocation),
                                        ("round32", 32, None), ("keep-stem", 16, keep_stem())):
        model = copy.deepcopy(original)
        prune_to_flops(model, example, method="magnitude", flops_reduction=0.75, allocation=allocation,
                       settings=PruneSettings(method="magnitude", round_to=round_to))
        out[label] = model.eval()
    return out


def quantize(fp32: Path, out: Path, how: str) -> Path:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from pwdeploy.calibration.quantize import IndexedCalibrationReader, prepare, quantize_int8

    images = np.random.default_rng(0).standard_normal((8, *SHAPE)).astype(np.float32)
    reader = IndexedCalibrationReader(lambda i: images[i], np.arange(8), "input", batch_size=8)
    prepared = out.with_suffix(".prepared.onnx")
    prepare(fp32, prepared)
    if how == "u8+per-tensor":
        quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=False,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, "QuantizeBias": False})
        return out
    stem = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"][:1]
    quantize_int8(fp32, out, reader, activations="uint8", prepared=prepared,
                  float_nodes=stem if how == "u8+float-stem" else None)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import torch

    from pwdeploy.exporters.onnx_export import export_onnx
    from pwdeploy.fsutil import write_json
    from pwdeploy.latency import runtime_key
    from pwdeploy.latency.timing import by_op, profile_ops
    from pwdeploy.models import create_model
    from pwdeploy.progress import console
    from pwdeploy.prune.flops import count_macs_params
    from speedup import time_table

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.time()
    original = create_model("torchvision:resnet18", 1).eval()
    example = torch.randn(1, *SHAPE)
    variants = pruned_variants(original, example)
    base = count_macs_params(original, example)[0]
    mac_ratio = {label: base / count_macs_params(m, example)[0] for label, m in variants.items()}
    widths = {label: {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
              for label, model in variants.items()}
    results = {"runtime": runtime_key("cpu", args.threads), "load_average_1min_at_start": os.getloadavg()[0],
               "mac_ratio": mac_ratio, "conv_widths": widths, "timings": {}, "profiles_b8": {}}
    rounds = {8: 7 if args.quick else 15, 1: 15 if args.quick else 31}
    with tempfile.TemporaryDirectory(prefix="pwdeploy-int8-study-") as tmp:
        fp32 = {label: export_onnx(m, Path(tmp) / f"{label}.onnx", SHAPE) for label, m in variants.items()}
        for how in QUANTIZATIONS:
            paths = {label: quantize(p, Path(tmp) / f"{label}.{how}.onnx", how) for label, p in fp32.items()}
            for batch in (1, 8):
                timed = time_table(paths, SHAPE, batch, args.threads, rounds[batch])
                results["timings"][f"{how} b{batch}"] = timed
                console.print(f"{how:14s} b{batch}: original {timed['original']['median_ms']:.1f} ms; " + ", ".join(
                    f"{label} {t['speedup_median'] / mac_ratio[label]:.2f}" for label, t in timed.items()
                    if label != "original"))
            x = np.random.default_rng(0).standard_normal((8, *SHAPE)).astype(np.float32)
            for label in ("original", "round16"):
                nodes = profile_ops(paths[label], x, threads=args.threads, runs=5)
                top = sorted(nodes.items(), key=lambda kv: -kv[1]["us"])[:6]
                results["profiles_b8"][f"{how} {label}"] = {
                    "total_ms": sum(n["us"] for n in nodes.values()) / 1000,
                    "by_op_ms": {op: us / 1000 for op, us in by_op(nodes).items()},
                    "top_nodes": [{"node": k, "op": v["op"], "ms": v["us"] / 1000} for k, v in top]}
    for key, prof in results["profiles_b8"].items():
        stem = next((n["ms"] for n in prof["top_nodes"] if n["node"].startswith("/conv1/")), None)
        share = f", stem conv {stem:.1f} ms ({100 * stem / prof['total_ms']:.0f}%)" if stem else ""
        console.print(f"profile b8 {key}: {prof['total_ms']:.1f} ms kernel time{share}")
    results["seconds"] = time.time() - started
    results["load_average_1min_at_end"] = os.getloadavg()[0]
    write_json(args.out, results)
    console.print(f"wrote {args.out} in {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
