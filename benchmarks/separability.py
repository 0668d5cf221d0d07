"""Why distillation and feature-cluster pseudo-groups protect an unlabelled minority in one regime and not another.

For each regime's baseline of the fairness benchmark (benchmarks/fairness.py trains them; this script only reads
them) it measures, on the frozen original:
- its accuracy per group (test split) and on the training split's minority (what distillation copies);
- how separable the minority is in its penultimate features: a class-balanced linear probe (logistic regression
  on the training split's features, per class, scored on the validation split: minority recall and majority
  recall), and what the label-free clustering (``--pseudo-groups clusters`` at its defaults) finds: clusters per
  class, the share of the minority in its best cluster and the share of that cluster that is minority;
- the error set's coverage: the share of the minority the original gets wrong on the training split (what
  ``--pseudo-groups error-set`` can single out).

    PYTHONPATH=. python3 benchmarks/separability.py      # a minute on one core; writes separability.json / .md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fairness as bench  # noqa: E402


def probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor) -> dict:
    """Class-balanced logistic regression (L-BFGS, small L2) minority-vs-majority within one class."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    z, zt = (train_x - mean) / std, (test_x - mean) / std
    w = torch.zeros(z.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    pos = float(train_y.float().mean())
    weight = torch.where(train_y == 1, 0.5 / max(pos, 1e-6), 0.5 / max(1 - pos, 1e-6))
    optimizer = torch.optim.LBFGS([w, b], max_iter=300)

    def closure():
        optimizer.zero_grad()
        loss = (weight * torch.nn.functional.binary_cross_entropy_with_logits(
            z @ w + b, train_y.float(), reduction="none")).mean() + 1e-3 * (w ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        pred = (zt @ w + b > 0).long()
    recall = lambda g: float(((pred == g) & (test_y == g)).sum() / max(1, int((test_y == g).sum())))  # noqa: E731
    return {"minority_recall": 100 * recall(1), "majority_recall": 100 * recall(0)}


def measure(variant: str, out: Path) -> dict:
    from pwdeploy.config import ClusterSettings
    from pwdeploy.data import DataSpec, create_dataset
    from pwdeploy.metrics import group_metrics, predict
    from pwdeploy.models.checkpoint import load_model
    from pwdeploy.pseudo_groups import build_pseudo_groups, features_and_logits

    task = bench.baseline_task(variant, 0, out)
    model, _ = load_model(task["path"])
    spec = DataSpec("synthetic", None, dict(bench.REGIMES[variant]["options"]))
    splits = {s: create_dataset(spec, s) for s in ("train", "val", "test")}
    feats = {s: features_and_logits(model, d, torch.device("cpu")) for s, d in splits.items()}
    test = splits["test"]
    metrics = group_metrics(predict(feats["test"][1]), test.labels, test.groups, test.group_names)
    train = splits["train"]
    train_pred = feats["train"][1].argmax(1)
    minority = train.groups == 1
    row = {"variant": variant, "baseline": Path(task["path"]).name,
           "original_test": {g: m["accuracy"] for g, m in metrics["groups"].items()},
           "original_train_minority": 100 * float((train_pred[minority] == train.labels[minority]).mean())
           if minority.any() else None,
           "error_set_covers_minority": 100 * float((train_pred[minority] != train.labels[minority]).mean())
           if minority.any() else None, "classes": {}}
    pg = build_pseudo_groups("clusters", feats["train"][0], feats["train"][1], train.labels, ClusterSettings(), 0)
    val = splits["val"]
    for c in (0, 1):
        rows, vrows = train.labels == c, val.labels == c
        entry = {"clusters": int(sum(1 for n in pg.names if n.startswith(f"class {c} ")))}
        if minority[rows].sum() >= 5:
            entry["probe"] = probe(torch.from_numpy(feats["train"][0][rows]), torch.from_numpy(train.groups[rows]),
                                   torch.from_numpy(feats["val"][0][vrows]), torch.from_numpy(val.groups[vrows]))
            ids = pg.train_ids[rows]
            m = minority[rows]
            best = max(set(ids.tolist()), key=lambda i: (m & (ids == i)).sum())
            entry["best_cluster_share_of_minority"] = 100 * float((m & (ids == best)).sum() / m.sum())
            entry["minority_share_of_best_cluster"] = 100 * float((m & (ids == best)).sum() / (ids == best).sum())
        row["classes"][str(c)] = entry
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["# Separability of the minority in the original's features", "",
             "Written by `benchmarks/separability.py` from the fairness benchmark's baselines (baseline seed 0). "
             "Probe: class-balanced logistic regression on the training split's penultimate features, scored on "
             "validation (minority / majority recall). Clusters: `--pseudo-groups clusters` at its defaults; "
             "*found* = share of the class's minority in its best cluster, *pure* = share of that cluster that is "
             "minority.", "",
             "| regime | original test acc majority / minority | original train minority | error set covers | "
             "class | probe minority / majority recall | clusters | found | pure |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        t = r["original_test"]
        for c, e in r["classes"].items():
            p = e.get("probe")
            probe_text = f"{p['minority_recall']:.0f} / {p['majority_recall']:.0f}" if p else "–"
            found = f"{e['best_cluster_share_of_minority']:.0f}%" if "probe" in e else "–"
            pure = f"{e['minority_share_of_best_cluster']:.0f}%" if "probe" in e else "–"
            fmt = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
            lines.append(f"| {r['variant']} | {fmt(t.get('majority'))} / {fmt(t.get('minority'))} | "
                         f"{fmt(r['original_train_minority'])} | {fmt(r['error_set_covers_minority'])}% | {c} | "
                         f"{probe_text} | {e['clusters']} | {found} | {pure} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--variants", default="colour,subtle,weak-minority,one-group")
    args = p.parse_args(argv)
    from pwdeploy.fsutil import write_json, write_text

    torch.manual_seed(0)
    rows = [measure(v, Path(args.out)) for v in bench.parse_list(args.variants)]
    write_json(Path(args.out) / "separability.json", {"schema": "pwdeploy.separability/1", "rows": rows})
    write_text(Path(args.out) / "separability.md", markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
