"""Do removed MACs become time saved? Realized speed-up / MAC ratio on ONNX Runtime CPU, measured in one run.

    python benchmarks/speedup.py            # resnet18 @218x178, resnet50 and mobilenet_v2 @224
    python benchmarks/speedup.py --quick    # resnet18 only, fewer timing rounds

Per model (random weights: only speed means anything here), every variant removes ~75% of the MACs:
- ``old``: pwdeploy's global magnitude ranking, no rounding (``--round-to 1``: pwdeploy before channel rounding);
- ``round16``: the same with channels rounded to the target's default multiple (16: ONNX Runtime's NCHWc block);
- ``round16+uniform``: rounded, every group losing the same share (``--allocation uniform``);
- ``round16+lat`` (resnet18): rounded, with the latency-weighted allocation (``--allocation latency``, LUT at
  batch 8);
- ``tp-uniform`` / ``tp-uniform16``: Torch-Pruning's MagnitudePruner, one uniform ratio bisected to the same
  MACs as ``round16``, without and with ``round_to=16``;
- resnet18 only, ``latency-target``: ``--latency-reduction 0.7`` at batch 8 (rounded, latency allocation).
fp32 and INT8 (Q/DQ, random calibration images, quantized as the onnx-int8 target does: UINT8 activations,
``--int8-activations int8`` for TensorRT's symmetric scheme), batch 1 and 8; all sides of one table are timed in
turn in one process (medians of per-round speed-ups, with the 25-75% spread: the 2 cores are shared). Per-op ONNX
Runtime profiles of the original vs the pruned resnet18s (batch 8, fp32 and INT8) show where the time goes.
Results: tables on the terminal and benchmarks/results/speedup.json.
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
os.environ.setdefault("PWDEPLOY_NO_PROGRESS", "1")

RESULTS = ROOT / "benchmarks" / "results" / "speedup.json"
MODELS = {"resnet18": ("torchvision:resnet18", (3, 218, 178), 1),  # CelebA-size input, one logit
          "resnet50": ("torchvision:resnet50", (3, 224, 224), 1000),
          "mobilenet_v2": ("torchvision:mobilenet_v2", (3, 224, 224), 1000)}
REDUCTION = 0.75
LATENCY_REDUCTION = 0.7  # the latency target asked of resnet18 at batch 8 (a 3.3x speed-up)


def pwdeploy_variant(model, shape, *, round_to: int, allocation: str, threads: int):
    import torch

    from pwdeploy.config import PruneSettings
    from pwdeploy.latency import LatencyCost, LatencyLUT
    from pwdeploy.prune import prune_to_flops
    from pwdeploy.prune.allocation import make_allocation

    example = torch.randn(1, *shape)
    cost = LatencyCost(LatencyLUT(threads=threads), example, batch=8) if allocation == "latency" else None
    alloc = make_allocation(allocation, cost)
    prune_to_flops(model, example, method="magnitude", flops_reduction=REDUCTION, allocation=alloc,
                   settings=PruneSettings(method="magnitude", round_to=round_to))
    return model


def tp_uniform(original, shape, macs_goal: int, round_to: int | None):
    """Torch-Pruning's MagnitudePruner with one uniform ratio, bisected until its MACs match ``macs_goal``."""
    import torch
    import torch_pruning as tp

    from pwdeploy.models import classifier_layers
    from pwdeploy.prune.flops import count_macs_params

    example = torch.randn(1, *shape)
    lo, hi, best = 0.0, 0.95, None
    for _ in range(7):
        ratio = (lo + hi) / 2
        model = copy.deepcopy(original)
        tp.pruner.MagnitudePruner(model, example, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=ratio, ignored_layers=classifier_layers(model),
                                  round_to=round_to).step()
        macs = count_macs_params(model, example)[0]
        if best is None or abs(macs - macs_goal) < abs(best[1] - macs_goal):
            best = (model, macs, ratio)
        lo, hi = (ratio, hi) if macs > macs_goal else (lo, ratio)
    return best[0], best[2]


def build(name: str, folder: Path, *, threads: int, with_target: bool, calib: int, activations: str) -> dict:
    import torch

    from pwdeploy.exporters.onnx_export import export_onnx
    from pwdeploy.models import create_model
    from pwdeploy.prune.flops import count_macs_params

    arch, shape, classes = MODELS[name]
    torch.manual_seed(0)
    original = create_model(arch, classes).eval()
    example = torch.randn(1, *shape)
    variants, info = {"original": original}, {}
    t0 = time.time()
    variants["old"] = pwdeploy_variant(copy.deepcopy(original), shape, round_to=1, allocation="global",
                                       threads=threads)
    variants["round16"] = pwdeploy_variant(copy.deepcopy(original), shape, round_to=16, allocation="global",
                                           threads=threads)
    variants["round16+uniform"] = pwdeploy_variant(copy.deepcopy(original), shape, round_to=16,
                                                   allocation="uniform", threads=threads)
    if with_target:  # resnet18 only: the LUT for a deep net's every pruned shape takes long on 2 shared cores
        variants["round16+lat"] = pwdeploy_variant(copy.deepcopy(original), shape, round_to=16,
                                                   allocation="latency", threads=threads)
    goal = count_macs_params(variants["round16"], example)[0]
    variants["tp-uniform"], info["tp_uniform_ratio"] = tp_uniform(original, shape, goal, None)
    variants["tp-uniform16"], info["tp_uniform16_ratio"] = tp_uniform(original, shape, goal, 16)
    if with_target:
        variants["latency-target"], info["latency_target"] = latency_target(original, shape, threads)
    info["prune_seconds"] = time.time() - t0
    base_macs = count_macs_params(original, example)[0]
    paths = {}
    for label, model in variants.items():
        paths[label] = export_onnx(model.eval(), folder / f"{label}.onnx", shape)
        macs = count_macs_params(model, example)[0]
        info.setdefault("macs", {})[label] = macs
        info.setdefault("mac_ratio", {})[label] = base_macs / macs
        info.setdefault("stage_macs", {})[label] = stage_macs(model, shape)
    info["int8"] = quantize_all(paths, folder, shape, calib, activations)
    info["paths"] = paths
    info["shape"] = shape
    return info


def latency_target(original, shape, threads: int):
    """--latency-reduction LATENCY_REDUCTION at batch 8, rounded to 16, latency-weighted allocation, through the
    product's own path (pwdeploy.speed.prune_for_deploy)."""
    import torch

    from pwdeploy.config import build_config
    from pwdeploy.speed import prune_for_deploy

    config = build_config({"prune": {"method": "magnitude", "round_to": 16, "allocation": "latency",
                                     "latency_reduction": LATENCY_REDUCTION, "latency_batch": 8,
                                     "latency_threads": threads}})
    model = copy.deepcopy(original)
    result, record = prune_for_deploy(config, model, original, torch.randn(1, *shape), shape)
    return model, dict(record["latency_target"], mac_ratio=result.macs_before / result.macs_after)


def quantize_all(paths: dict, folder: Path, shape, calib: int, activations: str) -> dict:
    from pwdeploy.calibration.quantize import IndexedCalibrationReader, quantize_int8

    images = np.random.default_rng(0).standard_normal((calib, *shape)).astype(np.float32)
    out = {}
    for label, path in paths.items():
        reader = IndexedCalibrationReader(lambda i: images[i], np.arange(calib), "input", batch_size=calib)
        out[label] = folder / f"{label}.int8.onnx"
        quantize_int8(path, out[label], reader, method="minmax", activations=activations)
    return out


def time_table(paths: dict, shape, batch: int, threads: int, rounds: int) -> dict:
    from pwdeploy.latency import TimedSession, time_alternating

    sessions = {label: TimedSession(p, threads=threads) for label, p in paths.items()}
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    return time_alternating(sessions, x, rounds=rounds)


def profile(info: dict, threads: int, precision: str = "fp32") -> dict:
    """Per-op-type kernel time of the original and pruned resnet18s at batch 8 (ONNX Runtime profiler)."""
    from pwdeploy.latency.timing import by_op, profile_ops

    x = np.random.default_rng(0).standard_normal((8, *info["shape"])).astype(np.float32)
    out = {}
    paths = info["paths"] if precision == "fp32" else info["int8"]
    for label in ("original", "old", "round16", "round16+uniform", "round16+lat", "latency-target"):
        nodes = profile_ops(paths[label], x, threads=threads, runs=5)
        top = sorted(nodes.items(), key=lambda kv: -kv[1]["us"])[:8]
        out[label] = {"total_ms": sum(n["us"] for n in nodes.values()) / 1000,
                      "by_op_ms": {op: us / 1000 for op, us in by_op(nodes).items()},
                      "by_stage_ms": _by_stage({k: v["us"] / 1000 for k, v in nodes.items()}),
                      "top_nodes": [{"node": k, "op": v["op"], "ms": v["us"] / 1000} for k, v in top]}
    return out


def _stage(name: str) -> str:
    """resnet stage of an ONNX node or module name: layer1..layer4, or stem/head outside them."""
    for part in name.replace("/", ".").split("."):
        if part.startswith("layer") and part[5:].isdigit():
            return part
    return "stem+head"


def _by_stage(values: dict) -> dict:
    out: dict[str, float] = {}
    for name, value in values.items():
        out[_stage(name)] = out.get(_stage(name), 0.0) + value
    return out


def stage_macs(model, shape) -> dict:
    """MACs of every Conv2d / Linear summed per resnet stage (one forward pass with hooks)."""
    import torch

    macs = {}

    def hook(module, _inputs, output):
        per_out = module.weight[0].numel()  # in/groups x kh x kw (conv) or in_features (linear)
        macs[module] = per_out * output.numel()

    layers = {m: n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    handles = [m.register_forward_hook(hook) for m in layers]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return _by_stage({layers[m]: v for m, v in macs.items()})


def render(name: str, info: dict, timings: dict, console) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title=f"{name} {info['shape'][1]}x{info['shape'][2]}: realized speed-up / MAC ratio "
                        "(ONNX Runtime CPU, medians, [25-75%])", box=box.SIMPLE_HEAD)
    table.add_column("variant")
    table.add_column("MAC ratio", justify="right")
    for key in timings:
        table.add_column(key, justify="right")
    for label, ratio in info["mac_ratio"].items():
        if label == "original":
            continue
        cells = []
        for t in timings.values():
            m = t[label]
            cells.append(f"{m['speedup_median']:.2f}x = {m['speedup_median'] / ratio:.2f} "
                         f"[{m['speedup_p25'] / ratio:.2f}-{m['speedup_p75'] / ratio:.2f}]")
        table.add_row(label, f"{ratio:.2f}", *cells)
    console.print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="resnet18 only, fewer rounds")
    parser.add_argument("--models", default=None, help="comma-separated subset of " + ",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds per table (default 15, quick 7)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--latency-target-only", action="store_true",
                        help="only resnet18's latency target at batch 8 (results/speedup_latency_target.json)")
    parser.add_argument("--int8-activations", choices=("uint8", "int8"), default=None,
                        help="INT8 activation type (default: the onnx-int8 target's, pwdeploy.calibration.quantize.ACTIVATIONS)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from pwdeploy.calibration.quantize import activations_for

    args.int8_activations = args.int8_activations or activations_for("onnxruntime")
    if args.latency_target_only:
        return target_only(args)
    args.out = args.out or RESULTS
    import onnxruntime as ort
    import torch

    from pwdeploy.fsutil import write_json
    from pwdeploy.latency import runtime_key
    from pwdeploy.progress import console

    torch.set_num_threads(args.threads)
    names = args.models.split(",") if args.models else (["resnet18"] if args.quick else list(MODELS))
    rounds = args.rounds or (7 if args.quick else 15)
    started = time.time()
    results = {"runtime": runtime_key("cpu", args.threads), "onnxruntime": ort.__version__,
               "int8_activations": args.int8_activations,
               "load_average_1min_at_start": os.getloadavg()[0], "rounds": rounds,
               "models": previous_models(args.out, names) if args.models else {}}
    with tempfile.TemporaryDirectory(prefix="pwdeploy-speedup-") as tmp:
        for name in names:
            folder = Path(tmp) / name
            folder.mkdir()
            console.print(f"pruning {name} every way (+ INT8) ...")
            info = build(name, folder, threads=args.threads, with_target=name == "resnet18",
                         calib=4 if args.quick else 8, activations=args.int8_activations)
            timings = {}
            for precision, paths in (("fp32", info["paths"]), ("int8", info["int8"])):
                for batch in (1, 8):
                    timings[f"{precision} b{batch}"] = time_table(paths, info["shape"], batch, args.threads, rounds)
            render(name, info, timings, console)
            entry = {k: v for k, v in info.items() if k not in ("paths", "int8")}
            entry.update(timings=timings, runtime=results["runtime"], rounds=rounds,
                         int8_activations=args.int8_activations,
                         measured=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                         load_average_1min=os.getloadavg()[0])
            if name == "resnet18":
                entry["profile_b8_fp32"] = profile(info, args.threads)
                entry["profile_b8_int8"] = profile(info, args.threads, "int8")
                entry["stage_mac_ratio"] = {label: {st: base / max(macs.get(st, 0), 1) for st, base in
                                                    info["stage_macs"]["original"].items()}
                                            for label, macs in info["stage_macs"].items()}
                show_profile(entry["profile_b8_fp32"], entry["stage_mac_ratio"], console)
                show_profile(entry["profile_b8_int8"], entry["stage_mac_ratio"], console, "INT8")
                if "latency_target" in info:
                    lt = info["latency_target"]
                    console.print(f"latency target (batch 8, -{100 * LATENCY_REDUCTION:.0f}%): requested "
                                  f"{lt['requested_ms']:.1f} ms, measured {lt['measured_ms']:.1f} ms "
                                  f"({100 * lt['error']:+.1f}%), MAC ratio {lt['mac_ratio']:.2f}, "
                                  f"{len(lt['rounds'])} round(s)")
            results["models"][name] = entry
            write_json(args.out, results)  # after each model: a long run that is stopped keeps what it finished
    results["seconds"] = time.time() - started
    results["load_average_1min_at_end"] = os.getloadavg()[0]
    write_json(args.out, results)
    headline(results, console)
    console.print(f"wrote {args.out} in {results['seconds']:.0f} s")
    return 0


def previous_models(path: Path, names: list) -> dict:
    """The other models' entries of an earlier run (``--models`` re-measures a subset; each entry records the
    runtime and time it was measured on)."""
    from pwdeploy.fsutil import read_json

    if not path.is_file():
        return {}
    old = read_json(path)
    # files written before the activation type was recorded used symmetric INT8 activations
    return {name: {"runtime": old.get("runtime"), "rounds": old.get("rounds"),
                   "int8_activations": old.get("int8_activations", "int8"), **entry}
            for name, entry in old.get("models", {}).items() if name not in names}


# The variant each target's default produces here (magnitude pruning, 75% of the MACs): its Target's rounding
# (16 for both) and --allocation auto (the benchmark prunes by magnitude: global; compress's default Taylor
# route gets uniform on onnx-fp32, so that side is shown with its uniform variant).
DEFAULT_VARIANTS = {"fp32": ("onnx-fp32, Taylor route", "round16+uniform"), "int8": ("onnx-int8", "round16")}


def headline(results: dict, console) -> None:
    """Realized speed-up / MAC ratio of each target's default variant at batch 1 and 8 (the goal's numbers)."""
    for name, entry in results["models"].items():
        parts = []
        for precision, (target, label) in DEFAULT_VARIANTS.items():
            ratio = entry["mac_ratio"][label]
            cells = [f"b{b} {entry['timings'][f'{precision} b{b}'][label]['speedup_median'] / ratio:.2f}"
                     for b in (1, 8) if f"{precision} b{b}" in entry["timings"]]
            parts.append(f"{precision} ({target}: {label}) {', '.join(cells)}")
        console.print(f"{name}: realized speed-up / MAC ratio, " + "; ".join(parts))


def target_only(args) -> int:
    """resnet18 218x178 pruned to the latency target at batch 8, then timed against the original."""
    import torch

    from pwdeploy.exporters.onnx_export import export_onnx
    from pwdeploy.fsutil import write_json
    from pwdeploy.latency import runtime_key
    from pwdeploy.models import create_model
    from pwdeploy.progress import console

    torch.set_num_threads(args.threads)
    started = time.time()
    arch, shape, classes = MODELS["resnet18"]
    torch.manual_seed(0)
    original = create_model(arch, classes).eval()
    model, landing = latency_target(original, shape, args.threads)
    with tempfile.TemporaryDirectory(prefix="pwdeploy-speedup-") as tmp:
        paths = {label: export_onnx(m.eval(), Path(tmp) / f"{label}.onnx", shape)
                 for label, m in (("original", original), ("latency-target", model))}
        timed = time_table(paths, shape, 8, args.threads, args.rounds or 15)
    check = timed["latency-target"]
    landing["check_b8"] = check
    landing["check_error"] = (1 - 1 / check["speedup_median"]) / LATENCY_REDUCTION - 1
    result = {"runtime": runtime_key("cpu", args.threads), "requested_latency_reduction": LATENCY_REDUCTION,
              "landing": landing, "seconds": time.time() - started, "load_average_1min": os.getloadavg()[0]}
    out = args.out or RESULTS.with_name("speedup_latency_target.json")
    write_json(out, result)
    console.print(f"latency target at batch 8: asked -{100 * LATENCY_REDUCTION:.0f}% "
                  f"({1 / (1 - LATENCY_REDUCTION):.2f}x); landing loop measured {landing['measured_ms']:.1f} ms vs "
                  f"{landing['requested_ms']:.1f} ms requested ({100 * landing['error']:+.1f}%) in "
                  f"{len(landing['rounds'])} round(s); re-timed: {check['speedup_median']:.2f}x "
                  f"[{check['speedup_p25']:.2f}-{check['speedup_p75']:.2f}] at a MAC ratio of "
                  f"{landing['mac_ratio']:.2f} = {check['speedup_median'] / landing['mac_ratio']:.2f}; wrote {out}")
    return 0


def show_profile(prof: dict, stage_ratio: dict, console, precision: str = "fp32") -> None:
    from rich import box
    from rich.table import Table

    ops = sorted({op for p in prof.values() for op in p["by_op_ms"]}, key=lambda o: -prof["original"]["by_op_ms"].get(o, 0))
    table = Table(title=f"resnet18 batch 8, {precision}: ONNX Runtime kernel time per op type (ms, profiler)",
                  box=box.SIMPLE_HEAD)
    table.add_column("op")
    for label in prof:
        table.add_column(label, justify="right")
    for op in ops:
        table.add_row(op, *[f"{p['by_op_ms'].get(op, 0):.1f}" for p in prof.values()])
    table.add_row("total", *[f"{p['total_ms']:.1f}" for p in prof.values()])
    console.print(table)
    if precision == "fp32":
        console.print("Conv = NCHWc (blocked) kernels; FusedConv = NCHW im2col+SGEMM fallback that ONNX Runtime uses "
                      "when a conv's channels are not multiples of its block size; Reorder* convert between the two.")
    else:
        console.print("QLinearConv = ONNX Runtime's fused INT8 conv (NHWC); a float Conv between DequantizeLinear and "
                      "QuantizeLinear is a conv the runtime did not fuse (it runs in fp32).")
    # Per stage: where the removed MACs did (not) become time
    stages = list(prof["original"]["by_stage_ms"])
    table = Table(title=f"resnet18 batch 8, {precision}, per stage: kernel-time speed-up / MAC ratio of the stage",
                  box=box.SIMPLE_HEAD)
    table.add_column("stage")
    table.add_column("original ms", justify="right")
    for label in list(prof)[1:]:
        table.add_column(label, justify="right")
    for st in stages:
        base = prof["original"]["by_stage_ms"][st]
        cells = []
        for label, p in list(prof.items())[1:]:
            ms = p["by_stage_ms"].get(st, 0.0)
            cells.append(f"{base / max(ms, 1e-9):.1f}x / {stage_ratio[label].get(st, 1.0):.1f}x")
        table.add_row(st, f"{base:.1f}", *cells)
    console.print(table)


if __name__ == "__main__":
    raise SystemExit(main())
