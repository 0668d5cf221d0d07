"""Pruning budget vs the fixed schedule: worst-group drop paired by seed, from the fairness benchmark's cells.

    PYTHONPATH=. python3 benchmarks/fairness.py --ablations-only --families "pruning budget" \
        --settings "fixed schedule (before),budget 4 epochs,budget 8 epochs" --sweep-default-arms "" \
        --ablation-methods taylor --variants colour,subtle --ablation-reductions 0.75,0.9 --ablation-seeds 0-4 \
        --name fairness_budget
    PYTHONPATH=. python3 benchmarks/budget_report.py      # -> benchmarks/results/fairness_budget_paired.md

Each budget's cell is compared with the fixed schedule's cell of the same variant, reduction, arm and seed
(same baseline): mean difference of the worst-group drop with a 95% bootstrap interval over seeds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fairness_stats as stats  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FIXED = "fixed schedule (before)"


def paired_table(cells: list[dict], budgets: list[str]) -> list[str]:
    table = {}
    for c in cells:
        s = c["spec"]
        table[(s["variant"], s["reduction"], s["arm"], s["setting"], s["seed"])] = (
            stats.cell_numbers(c)["worst_drop"], c["timings_s"]["prune"])
    rng = np.random.default_rng(0)

    def ci(x):
        x = np.asarray(x)
        boot = [rng.choice(x, len(x)).mean() for _ in range(2000)]
        return f"{x.mean():+.1f} [{np.percentile(boot, 2.5):+.1f}, {np.percentile(boot, 97.5):+.1f}]"

    head = ["variant", "MACs removed", "arm", "fixed: worst drop", "prune s"]
    for b in budgets:
        head += [f"{b}: worst drop", "vs fixed, paired [95% CI]", "prune s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = sorted({k[:3] for k in table})
    for variant, reduction, arm in keys:
        seeds = sorted(k[4] for k in table if k[:4] == (variant, reduction, arm, FIXED))
        fixed = [table[(variant, reduction, arm, FIXED, s)] for s in seeds]
        row = [variant, f"{reduction:.0%}", arm, f"{np.mean([f[0] for f in fixed]):.1f}",
               f"{np.mean([f[1] for f in fixed]):.1f}"]
        for b in budgets:
            new = [table.get((variant, reduction, arm, b, s)) for s in seeds]
            if any(n is None for n in new):
                row += ["–", "–", "–"]
                continue
            row += [f"{np.mean([n[0] for n in new]):.1f}", ci([n[0] - f[0] for n, f in zip(new, fixed)]),
                    f"{np.mean([n[1] for n in new]):.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    return lines + ["", f"{len(seeds)} seeds per cell; worst-group drop in accuracy points (lower is better)."]


def main() -> int:
    data = json.loads((RESULTS / "fairness_budget.json").read_text())
    budgets = sorted({c["spec"]["setting"] for c in data["cells"]} - {FIXED})
    lines = ["# Pruning budget vs the fixed schedule (Taylor, synthetic data: 3000 training images, batch 128)", "",
             *paired_table(data["cells"], budgets)]
    out = RESULTS / "fairness_budget_paired.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
