"""Per-step time of PW vs CE retraining (goal: PW at most 5% slower), timed alternately in one process.

    python benchmarks/pw_overhead.py [--arch torchvision:resnet18] [--size 64] [--steps 15]

PW needs the frozen original model's outputs. Without augmentation they are computed once per sample and
cached (pwdeploy.train.OriginalOutputs), so a PW step costs a CE step plus the weights and soft targets; the
third side shows what a step would cost with the original model run live (as under augmentation).
Results: a table and benchmarks/results/pw_overhead.json.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PWDEPLOY_NO_PROGRESS", "1")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="torchvision:resnet18")
    parser.add_argument("--size", type=int, default=32, help="synthetic image size")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per side")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pw_overhead.json")
    args = parser.parse_args(argv)
    import torch

    from pwdeploy.data import DataSpec, create_dataset
    from pwdeploy.fsutil import write_json
    from pwdeploy.loss import LossFn
    from pwdeploy.models import create_model
    from pwdeploy.progress import console
    from pwdeploy.train import OriginalOutputs, batch_stream, make_loader

    torch.manual_seed(0)
    device = torch.device("cpu")
    data = create_dataset(DataSpec("synthetic", None, {"size": args.size, "n": 600}), "train")
    original = create_model(args.arch, data.num_classes).eval()
    cached = OriginalOutputs(original, data, device)
    live = copy.copy(cached)
    live.cache = None  # what augmentation forces: the original model runs on every batch
    sides = {"ce": (LossFn("ce"), None), "pw (cached original)": (LossFn("pw"), cached),
             "pw (live original)": (LossFn("pw"), live)}
    state = {}
    for name, (loss, outputs) in sides.items():
        model = copy.deepcopy(original).train()
        loader = make_loader(data, args.batch, shuffle=True, seed=0, drop_last=True)
        state[name] = (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
                       batch_stream(loader, device, outputs), loss)

    def step(name):
        model, optimizer, stream, loss = state[name]
        t0 = time.perf_counter()
        x, y, g, orig = next(stream)
        value = loss(model(x), y, orig, g)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        return time.perf_counter() - t0

    for name in sides:  # warm-up
        step(name)
    times = {name: [] for name in sides}
    for _ in range(args.steps):
        for name in sides:
            times[name].append(step(name))
    ce = times["ce"]
    result = {"arch": args.arch, "input": [3, args.size, args.size], "batch": args.batch, "steps": args.steps,
              "threads": torch.get_num_threads(), "load_average_1min": os.getloadavg()[0], "sides": {}}
    for name, t in times.items():
        ratios = sorted(a / b for a, b in zip(t, ce))
        result["sides"][name] = {"median_ms": 1000 * statistics.median(t), "vs_ce_median": statistics.median(ratios),
                                 "vs_ce_p25": ratios[len(ratios) // 4], "vs_ce_p75": ratios[3 * len(ratios) // 4]}
    from rich import box
    from rich.table import Table

    table = Table(title=f"retraining step time, {args.arch} {args.size}px batch {args.batch} (CPU, alternated)",
                  box=box.SIMPLE_HEAD)
    for col in ("loss", "ms / step", "vs CE [25-75%]"):
        table.add_column(col, justify="left" if col == "loss" else "right")
    for name, m in result["sides"].items():
        table.add_row(name, f"{m['median_ms']:.0f}", f"{m['vs_ce_median']:.3f} [{m['vs_ce_p25']:.3f}-"
                      f"{m['vs_ce_p75']:.3f}]")
    console.print(table)
    write_json(args.out, result)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
