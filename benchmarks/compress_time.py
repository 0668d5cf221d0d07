"""How long `pwdeploy compress` takes, per phase, with the default route: the CelebA-format fixture at 218x178
and the built-in synthetic data.

    PYTHONPATH=. python3 benchmarks/compress_time.py            # both (make bench)
    PYTHONPATH=. python3 benchmarks/compress_time.py --only celeba

- ``celeba``: 80 training images (16 validation, 24 test) written in CelebA's on-disk format at 218x178 (the
  tests' fixture writer), a ResNet-18 with one logit (random weights: only time means anything here), the
  CelebA config as a new user runs it (Taylor, PW + group balance, 93.75% fewer MACs, 30 retraining epochs,
  onnx-fp32);
- ``synthetic``: the synthetic config (3000 training images at 24x24, smallcnn, Taylor, 75%, 3 retraining
  epochs) from a baseline trained here for a few epochs.

Each run is a real ``pwdeploy.api.compress_model``; the phases come from its report.json ``timings_s`` and the
pruning schedule from ``prune_budget``, beside what the fixed schedule (``--prune-budget 0``) would have read.
Results: a table on the terminal and benchmarks/results/compress_time.json. Timings on a shared machine are
upper bounds: the load average at start and end is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("PWDEPLOY_NO_PROGRESS", "1")

RESULTS = ROOT / "benchmarks" / "results" / "compress_time.json"
GOAL_S = {"celeba": 300}  # the CelebA fixture: under 5 minutes on 2 cores with the default route


def celeba_case(tmp: Path) -> tuple[Path, dict]:
    """(checkpoint, overrides) for the CelebA-format fixture at 218x178 and a random ResNet-18."""
    from fixtures_data import write_celeba
    from pwdeploy.models import create_model
    from pwdeploy.models.checkpoint import save_checkpoint

    root = write_celeba(tmp / "data", counts=(80, 16, 24), size=(218, 178))
    model = tmp / "resnet18.pt"
    save_checkpoint(create_model("torchvision:resnet18", 1), model, arch="torchvision:resnet18", num_classes=1)
    return model, {"data": {"name": "celeba", "root": str(root)}, "model": {"arch": "torchvision:resnet18"}}


def synthetic_case(tmp: Path, baseline_epochs: int) -> tuple[Path, dict]:
    from pwdeploy.api import train_baseline

    model = tmp / "smallcnn.pt"
    train_baseline({"data": {"name": "synthetic"}, "baseline": {"epochs": baseline_epochs}}, model)
    return model, {"data": {"name": "synthetic"}}


def fixed_passes(report: dict) -> int:
    """Sample passes the fixed schedule would have planned on the same data (arithmetic, not timed)."""
    from pwdeploy.config import PruneSettings
    from pwdeploy.prune.budget import plan_budget

    b = report["prune_budget"]
    configured = b["configured"]
    settings = PruneSettings(taylor_batches=configured["importance_batches"],
                             steps_between=configured["adaptation_batches"], prune_steps=configured["steps"],
                             autobot_steps=configured["gate_steps"], prune_budget=0.0)
    return plan_budget(settings, kind=b["kind"], dataset_size=b["dataset_size"], batch_size=b["batch_size"],
                       importance_cost=b["importance_cost"]).planned_passes


def run_case(name: str, model: Path, overrides: dict, tmp: Path) -> dict:
    from pwdeploy.api import compress_model

    started = time.time()
    run = compress_model(model, overrides, tmp / f"run-{name}", quiet=True)
    report = json.loads((run / "report.json").read_text())
    return {"case": name, "wall_s": time.time() - started, "timings_s": report["timings_s"],
            "prune_budget": report["prune_budget"], "fixed_schedule_passes": fixed_passes(report),
            "flops_reduction": report["flops_reduction"], "method": report["method"],
            "goal_s": GOAL_S.get(name)}


def render(results: list[dict], console) -> None:
    from rich import box
    from rich.table import Table

    from pwdeploy.timings import PHASES, describe_budget

    table = Table(title="pwdeploy compress, default route: seconds per phase", box=box.SIMPLE_HEAD)
    table.add_column("data")
    for phase in (*PHASES, "total"):
        table.add_column(phase, justify="right")
    table.add_column("goal")
    for r in results:
        t = r["timings_s"]
        goal = "" if r["goal_s"] is None else ("met" if t["total"] < r["goal_s"] else "MISSED") + f" (<{r['goal_s']}s)"
        table.add_row(r["case"], *[f"{t.get(p, 0):.1f}" for p in (*PHASES, "total")], goal)
    console.print(table)
    for r in results:
        b = r["prune_budget"]
        console.print(f"{r['case']}: {describe_budget(b)}; read {b['drawn_samples']} samples "
                      f"({b['dataset_size']} in the training split) where the fixed schedule plans "
                      f"{r['fixed_schedule_passes']} ({r['fixed_schedule_passes'] / max(1, b['planned_passes']):.1f}x)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("celeba", "synthetic"), default=None)
    parser.add_argument("--baseline-epochs", type=int, default=3, help="synthetic baseline training epochs")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import torch

    from pwdeploy.fsutil import write_json
    from pwdeploy.progress import console

    torch.set_num_threads(args.threads)
    record = {"threads": args.threads, "load_average_1min_at_start": os.getloadavg()[0], "cases": []}
    with tempfile.TemporaryDirectory(prefix="pwdeploy-compress-time-") as tmp:
        tmp = Path(tmp)
        for name in ("celeba", "synthetic"):
            if args.only not in (None, name):
                continue
            console.print(f"compressing the {name} case with the default route ...")
            model, overrides = celeba_case(tmp) if name == "celeba" else synthetic_case(tmp, args.baseline_epochs)
            record["cases"].append(run_case(name, model, overrides, tmp))
            write_json(args.out, record)
    record["load_average_1min_at_end"] = os.getloadavg()[0]
    write_json(args.out, record)
    render(record["cases"], console)
    console.print(f"load average (1 min) {record['load_average_1min_at_start']:.1f} at start, "
                  f"{record['load_average_1min_at_end']:.1f} at end; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
