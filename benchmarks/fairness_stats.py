"""Aggregation, bootstrap intervals, tables and the plot for benchmarks/fairness.py (numpy + matplotlib).

A cell is one compress run: (variant, baseline seed, method, arm, FLOPs reduction, sweep family + setting,
seed). A series is the same cell over seeds; every number reported for a series is its mean over seeds with a
95% percentile bootstrap interval that resamples the seeds.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

N_BOOT = 5000
LEVEL = 0.95
GOAL_REDUCTION = 0.75  # the goal is stated at 75% FLOPs removed


def bootstrap_mean(values, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> dict:
    """Mean of ``values`` and its percentile bootstrap interval (resampling the values, i.e. the seeds)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    if v.size == 1:
        return {"mean": float(v[0]), "lo": float(v[0]), "hi": float(v[0]), "n": 1}
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, (n_boot, v.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return {"mean": float(v.mean()), "lo": float(np.quantile(means, alpha)),
            "hi": float(np.quantile(means, 1.0 - alpha)), "n": int(v.size)}


def cell_numbers(cell: dict) -> dict:
    """Per-group drops (original − pruned, points), worst-group drop, overall accuracy of one cell."""
    original, pruned = cell["metrics"]["original"], cell["metrics"]["pruned"]
    drops = {g: original["groups"][g]["accuracy"] - pruned["groups"][g]["accuracy"] for g in original["groups"]}
    return {"drops": drops, "worst_drop": max(drops.values()), "overall": pruned["overall"]["accuracy"],
            "overall_drop": original["overall"]["accuracy"] - pruned["overall"]["accuracy"],
            "flops_reduction": cell["flops_reduction"]}


def series_key(cell: dict) -> tuple:
    s = cell["spec"]
    # A setting is named within its family: two families may sweep a setting of the same name.
    return (s["variant"], s["method"], s["arm"], s["reduction"], s.get("family", "default"),
            s.get("setting", "default"), s["baseline_seed"])


def aggregate(cells: list[dict]) -> list[dict]:
    """One entry per series: means and intervals over seeds (and baseline seeds) of every number."""
    by_key = defaultdict(list)
    for cell in cells:
        by_key[series_key(cell)].append(cell)
    out = []
    for key, members in sorted(by_key.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        numbers = [cell_numbers(c) for c in members]
        groups = list(numbers[0]["drops"])
        out.append({
            "variant": key[0], "method": key[1], "arm": key[2], "reduction": key[3], "family": key[4],
            "setting": key[5], "baseline_seed": key[6],
            "seeds": sorted({(c["spec"]["baseline_seed"], c["spec"]["seed"]) for c in members}),
            "group_drop": {g: bootstrap_mean([n["drops"][g] for n in numbers]) for g in groups},
            "worst_drop": bootstrap_mean([n["worst_drop"] for n in numbers]),
            "overall": bootstrap_mean([n["overall"] for n in numbers]),
            "overall_drop": bootstrap_mean([n["overall_drop"] for n in numbers]),
            "flops_reduction": bootstrap_mean([n["flops_reduction"] for n in numbers]),
            "per_seed_worst_drop": [round(n["worst_drop"], 2) for n in numbers],
            "devices": sorted({c.get("device", "?") for c in members}),
        })
    return out


def paired_comparisons(cells: list[dict], reference_arm: str = "ce") -> list[dict]:
    """Each non-CE arm against CE on the same (variant, method, reduction, setting, baseline, seed)."""
    index = {}
    for c in cells:
        s = c["spec"]
        index[(s["variant"], s["method"], s["reduction"], s.get("family", "default"), s.get("setting", "default"),
               s["baseline_seed"], s["seed"], s["arm"])] = cell_numbers(c)
    pairs = defaultdict(list)
    for (variant, method, red, family, setting, bseed, seed, arm), nums in index.items():
        if arm == reference_arm:
            continue
        ref = index.get((variant, method, red, family, setting, bseed, seed, reference_arm))
        if ref is None and setting != "default":  # ablations of PW alone compare with the default CE
            ref = index.get((variant, method, red, "default", "default", bseed, seed, reference_arm))
        if ref is not None:
            pairs[(variant, method, red, family, setting, arm, bseed)].append((nums, ref))
    out = []
    for (variant, method, red, family, setting, arm, bseed), items in sorted(pairs.items(),
                                                                             key=lambda kv: str(kv[0])):
        arm_worst = [a["worst_drop"] for a, _ in items]
        ce_worst = [b["worst_drop"] for _, b in items]
        ce_mean, arm_mean = float(np.mean(ce_worst)), float(np.mean(arm_worst))
        out.append({
            "variant": variant, "method": method, "reduction": red, "family": family, "setting": setting, "arm": arm,
            "baseline_seed": bseed, "n": len(items),
            "worst_drop": arm_mean, "ce_worst_drop": ce_mean,
            "worst_drop_difference": bootstrap_mean([a - b for a, b in zip(arm_worst, ce_worst)]),
            "overall_difference": bootstrap_mean([a["overall"] - b["overall"] for a, b in items]),
            "ratio_to_ce": (arm_mean / ce_mean) if ce_mean > 0 else None,
            "seeds_better": int(sum(a < b for a, b in zip(arm_worst, ce_worst))),
            "halves_ce": bool(ce_mean > 0 and arm_mean <= 0.5 * ce_mean),
            "overall_within_1pt": bool(np.mean([a["overall"] - b["overall"] for a, b in items]) >= -1.0),
        })
    return out


def _ci(entry: dict, signed: bool = False) -> str:
    if entry is None or entry.get("mean") is None:
        return "–"
    fmt = "{:+.1f}" if signed else "{:.1f}"
    return f"{fmt.format(entry['mean'])} [{fmt.format(entry['lo'])}, {fmt.format(entry['hi'])}]"


def first_baseline(series: list[dict]) -> int | None:
    return min((s["baseline_seed"] for s in series), default=None)


def markdown_main(meta: dict, series: list[dict], comparisons: list[dict]) -> str:
    all_series, b0 = series, first_baseline(series)
    series = [s for s in series if s["baseline_seed"] == b0]
    comparisons = [c for c in comparisons if c["baseline_seed"] == b0]
    lines = [f"# Fairness benchmark: {meta['title']}", "",
             f"Device: **{meta['device_label']}**. Created {meta['created']} by `{meta['command']}`.",
             f"Seeds: {meta['seeds']} (pruning/retraining seeds; baselines: {meta['baseline_seeds']}, one baseline per "
             f"variant and baseline seed, shared by every cell). Cells: {meta['cells']} "
             f"({meta['cells_by_device']}).", "",
             "Drops are points of test accuracy lost against the unpruned original (positive = worse), mean over "
             "seeds with a 95% bootstrap interval over seeds in brackets. *Worst drop* is the largest group drop "
             "per seed, averaged. Arms: `ce` cross-entropy, `pw` the paper's performance-weighted loss, "
             "`pw+gb` **extension, not the paper's method**: PW weights re-normalised so each group carries equal "
             "total weight (needs group labels for training). Label-free arms: `kd` (distillation from the "
             "original), `kd+pw` (PW-weighted), `pw+pseudo` / `kd+pseudo` (balance over label x original right/wrong "
             "pseudo-groups; `kd+pseudo/0.5` half-way: each pseudo-group's factor square-rooted), `kd/select` "
             "(checkpoint chosen on validation worst-group accuracy), `ce/uniform` / `pw/uniform` (`--allocation uniform`: "
             "every layer loses the same share of its channels); group-aware "
             "`fairgrape` (channel-level adaptation of Lin et al. 2022) and `recipes` (the recipe chosen on "
             "validation). Feature-cluster arms (label-free extensions): `kd+clusters/0.5` (distillation, half-way "
             "balance over k-means clusters of the original's penultimate features per class), `gdro+clusters` / "
             "`gdro+clusters/0.1` (group DRO of Sagawa et al. 2020 over those clusters, step 0.01 / 0.1), "
             "`kd-gdro+clusters/0.1` (the same with distillation as the per-sample loss); group-aware `gdro` / "
             "`gdro/0.1` (group DRO over the real training groups); `ce/gradual` / `kd/gradual` (the retraining "
             "epochs spread over the pruning rounds, equal total epochs). Constraint form (extension after Balancing "
             "Act, Hashemizadeh et al. 2024): `gdro-c/η` a Lagrange multiplier per real training group on its "
             "accuracy gap to the original beyond the overall gap (tolerance 1 point), dual step η (group-aware); "
             "`gdro-c+clusters/η` the same over feature clusters (`clusters4`: 4 per class), label-free. "
             "Disagreement weighting (label-free extension after Hooker et al.): `ce+dis/W`, `kd+dis/W` — samples the "
             "pruned model classifies differently from the original count 1 + W times. Stopping rule (validation "
             "group labels; not at equal MACs): `ce/max-drop5` (undo the first round taking a group more than 5 "
             "points below the original), `ce/auto5` (`--flops-reduction auto`: largest of 50–95% within 5 points).",
             ""]
    if len({s["baseline_seed"] for s in all_series}) > 1:
        lines += [f"Tables below: baseline seed {b0}; other baselines in *Across baselines* at the end.", ""]
    goal = [c for c in comparisons if c["reduction"] == GOAL_REDUCTION and c["setting"] == "default"]
    if goal:
        lines += [f"## Goal check at {GOAL_REDUCTION:.0%} FLOPs removed: does the arm at least halve CE's worst drop, "
                  "with overall accuracy within 1 point?", "",
                  "| variant | method | arm | worst drop (arm) | worst drop (CE) | arm − CE [95% CI] | "
                  "overall arm − CE | seeds better | halves CE | overall ok |",
                  "|---|---|---|---:|---:|---:|---:|---:|:-:|:-:|"]
        for c in goal:
            lines.append(f"| {c['variant']} | {c['method']} | {c['arm']} | {c['worst_drop']:.1f} | "
                         f"{c['ce_worst_drop']:.1f} | {_ci(c['worst_drop_difference'], True)} | "
                         f"{_ci(c['overall_difference'], True)} | {c['seeds_better']}/{c['n']} | "
                         f"{'yes' if c['halves_ce'] else 'no'} | {'yes' if c['overall_within_1pt'] else 'no'} |")
        lines.append("")
    for variant in sorted({s["variant"] for s in series}):
        rows = [s for s in series if s["variant"] == variant and s["setting"] == "default"]
        groups = list(rows[0]["group_drop"]) if rows else []
        lines += [f"## Variant `{variant}`", "",
                  "| method | arm | FLOPs removed | " + " | ".join(f"{g} drop" for g in groups)
                  + " | worst drop | overall acc | n |",
                  "|---|---|---:|" + "---:|" * len(groups) + "---:|---:|---:|"]
        for s in sorted(rows, key=lambda r: (r["method"], r["reduction"], r["arm"])):
            lines.append(f"| {s['method']} | {s['arm']} | {100 * s['flops_reduction']['mean']:.1f}% | "
                         + " | ".join(_ci(s["group_drop"][g]) for g in groups)
                         + f" | {_ci(s['worst_drop'])} | {_ci(s['overall'])} | {s['worst_drop']['n']} |")
        lines.append("")
    lines += markdown_goals(comparisons, 0.75)
    lines += markdown_goals(comparisons)
    lines += markdown_stopping(series)
    lines += markdown_summary(series)
    lines += markdown_across_baselines(all_series)
    return "\n".join(lines)


LABEL_FREE = ("kd", "kd+pw", "pw+pseudo", "kd+pseudo", "kd+pseudo/0.5", "kd/select",  # beyond the paper's PW
              "ce/uniform", "pw/uniform", "kd+clusters", "kd+clusters/0.5", "gdro+clusters", "gdro+clusters/0.1", "kd-gdro+clusters/0.1",
              "ce/gradual", "kd/gradual", "ce+dis/10", "ce+dis/30", "kd+dis/10", "gdro-c+clusters/1",
              "gdro-c+clusters/0.1", "gdro-c+clusters4/0.1")
GROUP_AWARE = ("pw+gb", "fairgrape", "gdro", "gdro/0.1", "gdro-c/1", "gdro-c/0.1", "gdro-c/0.03")
# The stopping rule trades MACs for the bound, so its cells are not at equal MACs: reported on their own.
STOPPING = ("ce/max-drop5", "ce/auto5")


def markdown_goals(comparisons: list[dict], reduction: float = 0.9) -> list[str]:
    """The 90% goals per method/variant cell: the best label-free arm halving CE's worst drop with overall accuracy
    within 1 point, and the best group-aware arm cutting it by >= 75% (picked on the test numbers: optimistic)."""
    cells = defaultdict(list)
    for c in comparisons:
        if abs(c["reduction"] - reduction) < 1e-9 and c["setting"] == "default":
            cells[(c["variant"], c["method"])].append(c)
    if not cells:
        return []
    lines = [f"## Goals at {reduction:.0%} FLOPs removed", "",
             "Per method/variant cell: CE's worst drop; the label-free arm with the lowest mean worst drop among "
             "those within 1 point of CE's overall accuracy (*halves*: at most half of CE's); the group-aware arm "
             "(needs training group labels) likewise (*cuts 75%*: at most a quarter of CE's). Picked on the test "
             "numbers shown, so optimistic.", "",
             "| variant | method | CE worst drop | best label-free (overall vs CE) | halves | "
             "best group-aware (overall vs CE) | cuts 75% |", "|---|---|---:|---|:-:|---|:-:|"]
    met = {"free": 0, "aware": 0}
    for (variant, method), rows in sorted(cells.items()):
        ce = rows[0]["ce_worst_drop"]
        text = {}
        for kind, arms, factor in (("free", LABEL_FREE, 0.5), ("aware", GROUP_AWARE, 0.25)):
            ok = [c for c in rows if c["arm"] in arms and c["overall_within_1pt"]]
            best = min(ok, key=lambda c: c["worst_drop"]) if ok else None
            hit = bool(best and ce > 0 and best["worst_drop"] <= factor * ce)
            met[kind] += hit
            text[kind] = (f"{best['arm']}: {best['worst_drop']:.1f} ({best['overall_difference']['mean']:+.1f}, "
                          f"n {best['n']})" if best else "none within 1 point", "yes" if hit else "no")
        lines.append(f"| {variant} | {method} | {ce:.1f} | {text['free'][0]} | {text['free'][1]} | "
                     f"{text['aware'][0]} | {text['aware'][1]} |")
    lines += ["", f"Label-free goal met in **{met['free']} of {len(cells)}** cells; group-aware in "
                  f"**{met['aware']} of {len(cells)}**.", ""]
    return lines


def markdown_stopping(series: list[dict]) -> list[str]:
    """The stopping-rule arms: the reduction each reached (mean over seeds) and its worst drop, next to CE at the
    asked reduction."""
    rows = [s for s in series if s["arm"] in STOPPING and s["setting"] == "default"]
    if not rows:
        return []
    ce = {(s["variant"], s["method"], s["reduction"]): s for s in series if s["arm"] == "ce"}
    lines = ["## Fairness as the stopping rule (validation groups, bound 5 points)", "",
             "`FLOPs removed` is what the rule reached (mean [95% CI] over seeds), against CE at the asked reduction "
             "(for `ce/auto5` the row's reduction is only a label: auto tries 50/75/85/90/95%). Worst drop is on "
             "the test split; the rule sees validation only.", "",
             "| regime | method | arm | asked | FLOPs removed | worst drop | overall acc | CE worst drop at asked | n |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for s in sorted(rows, key=lambda r: (r["variant"], r["method"], r["arm"], r["reduction"])):
        base = ce.get((s["variant"], s["method"], s["reduction"]))
        reached = {k: (100 * v if isinstance(v, float) else v) for k, v in s["flops_reduction"].items()}
        lines.append(f"| {s['variant']} | {s['method']} | {s['arm']} | {s['reduction']:.0%} | {_ci(reached)} | "
                     f"{_ci(s['worst_drop'])} | {_ci(s['overall'])} | {_ci(base['worst_drop']) if base else '–'} | "
                     f"{s['worst_drop']['n']} |")
    return lines + [""]


def markdown_summary(series: list[dict]) -> list[str]:
    """Per regime, method and reduction: worst drop of CE, PW, the best label-free option, PW + group balance
    and FairGRAPE (the label-free/group-aware table). Only written when a label-free or FairGRAPE arm was run."""
    rows = defaultdict(dict)
    for s in series:
        if s["setting"] == "default":
            rows[(s["variant"], s["method"], s["reduction"])][s["arm"]] = s
    if not any(set(arms) & set(LABEL_FREE + ("fairgrape",)) for arms in rows.values()):
        return []
    lines = ["## Summary: worst-group drop per regime (points, mean [95% CI] over seeds)", "",
             "*Best label-free* is the label-free extension arm with the lowest mean worst drop in that row, picked "
             "on the test numbers shown (so optimistic); `kd/select` picks its checkpoint on validation groups. "
             "FairGRAPE runs in the Taylor rows only (it replaces Taylor's criterion).", "",
             "| regime | method | FLOPs removed | CE | PW (paper) | best label-free | PW + GB (extension) | fairgrape |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (variant, method, red), arms in sorted(rows.items(), key=lambda kv: str(kv[0])):
        free = [a for a in LABEL_FREE if a in arms]
        best = min(free, key=lambda a: arms[a]["worst_drop"]["mean"]) if free else None
        cell = (lambda a: _ci(arms[a]["worst_drop"]) if a in arms else "–")
        best_text = f"{best}: {cell(best)}" if best else "–"
        lines.append(f"| {variant} | {method} | {red:.0%} | {cell('ce')} | {cell('pw')} | {best_text} | "
                     f"{cell('pw+gb')} | {cell('fairgrape')} |")
    return lines + [""]


def markdown_across_baselines(series: list[dict]) -> list[str]:
    """Worst drop at the goal reduction per baseline, and over baselines (the baseline is the unit)."""
    bseeds = sorted({s["baseline_seed"] for s in series})
    if len(bseeds) < 2:
        return []
    rows = defaultdict(dict)
    for s in series:
        if s["reduction"] == GOAL_REDUCTION and s["setting"] == "default":
            rows[(s["variant"], s["method"], s["arm"])][s["baseline_seed"]] = s
    lines = [f"## Across baselines at {GOAL_REDUCTION:.0%} FLOPs removed", "",
             "Worst drop (mean over pruning seeds) for each independently trained baseline; last columns: mean "
             "over baselines with a 95% bootstrap interval resampling the baselines, and overall accuracy.", "",
             "| variant | method | arm | " + " | ".join(f"baseline {b}" for b in bseeds)
             + " | over baselines | overall acc |", "|---|---|---|" + "---:|" * (len(bseeds) + 2)]
    for (variant, method, arm), by_b in sorted(rows.items()):
        means = [by_b[b]["worst_drop"]["mean"] if b in by_b else None for b in bseeds]
        overall = bootstrap_mean([by_b[b]["overall"]["mean"] for b in bseeds if b in by_b])
        lines.append(f"| {variant} | {method} | {arm} | "
                     + " | ".join("–" if m is None else f"{m:.1f}" for m in means)
                     + f" | {_ci(bootstrap_mean(means))} | {_ci(overall)} |")
    lines.append("")
    return lines


def markdown_ablations(meta: dict, series: list[dict], comparisons: list[dict]) -> str:
    lines = [f"# Fairness ablations: {meta['title']}", "",
             f"Device: **{meta['device_label']}**. Created {meta['created']} by `{meta['command']}`. "
             f"Seeds: {meta['seeds']}; baselines: {meta['baseline_seeds']}.", "",
             "Each row changes one setting from the defaults in `configs/synthetic.yaml` (row `default`). "
             "Worst drop: mean [95% bootstrap CI over seeds]. *vs CE*: the arm's worst drop minus CE's at the "
             "same setting where CE was run with it, else CE at the defaults.", ""]
    comp = {(c["variant"], c["method"], c["reduction"], c["family"], c["setting"], c["arm"]): c for c in comparisons}
    keys = sorted({(s["variant"], s["method"], s["reduction"]) for s in series}, key=str)
    for variant, method, red in keys:
        rows = [s for s in series if (s["variant"], s["method"], s["reduction"]) == (variant, method, red)]
        groups = list(rows[0]["group_drop"])
        lines += [f"## `{variant}` / {method} / {red:.0%} FLOPs removed", "",
                  "| ablation | setting | arm | " + " | ".join(f"{g} drop" for g in groups)
                  + " | worst drop | overall acc | vs CE (worst) | seeds better | n |",
                  "|---|---|---|" + "---:|" * len(groups) + "---:|---:|---:|---:|---:|"]
        rows.sort(key=lambda r: (r["family"] != "default", r["family"], r["setting"], r["arm"]))
        for s in rows:
            c = comp.get((variant, method, red, s["family"], s["setting"], s["arm"]))
            vs = _ci(c["worst_drop_difference"], True) if c else "–"
            better = f"{c['seeds_better']}/{c['n']}" if c else "–"
            lines.append(f"| {s['family']} | {s['setting']} | {s['arm']} | "
                         + " | ".join(_ci(s["group_drop"][g]) for g in groups)
                         + f" | {_ci(s['worst_drop'])} | {_ci(s['overall'])} | {vs} | {better} | "
                         f"{s['worst_drop']['n']} |")
        lines.append("")
    return "\n".join(lines)


METHOD_COLOURS = {"taylor": "tab:blue", "autobot": "tab:orange", "magnitude": "tab:green"}
ARM_STYLES = {"ce": ("--", "o"), "pw": ("-", "s"), "pw+gb": (":", "^"), "kd": ("-", "D"), "kd+pw": ("-", "d"),
              "pw+pseudo": ("-.", "v"), "kd+pseudo": ("-.", "P"), "kd+pseudo/0.5": ("-", "p"), "kd/select": ("-", "*"),
              "fairgrape": (":", "X"), "recipes": (":", "h"), "ce/uniform": ("--", "8"), "pw/uniform": ("-", "H")}


def plot(series: list[dict], path: Path, title: str) -> None:
    """Worst-group drop vs FLOPs removed, one line per method × arm, bootstrap intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b0 = first_baseline(series)
    rows = [s for s in series if s["setting"] == "default" and s["baseline_seed"] == b0]
    variants = sorted({s["variant"] for s in rows})
    fig, axes = plt.subplots(1, len(variants), figsize=(6.2 * len(variants), 4.6), squeeze=False, sharey=True)
    for ax, variant in zip(axes[0], variants):
        lines = defaultdict(list)
        for s in rows:
            if s["variant"] == variant:
                lines[(s["method"], s["arm"])].append(s)
        for i, ((method, arm), pts) in enumerate(sorted(lines.items())):
            pts.sort(key=lambda s: s["reduction"])
            # Small horizontal offsets keep overlapping intervals readable; all within 1 point (the MACs band).
            dodge = min(0.25, 1.0 / len(lines))
            x = np.array([100 * p["flops_reduction"]["mean"] for p in pts]) + (i - len(lines) / 2) * dodge
            y = np.array([p["worst_drop"]["mean"] for p in pts])
            err = np.array([[p["worst_drop"]["mean"] - p["worst_drop"]["lo"] for p in pts],
                            [p["worst_drop"]["hi"] - p["worst_drop"]["mean"] for p in pts]])
            style, marker = ARM_STYLES.get(arm, ("-.", "x"))
            ax.errorbar(x, y, yerr=err, linestyle=style, marker=marker, capsize=3, linewidth=1.5,
                        color=METHOD_COLOURS.get(method, None),
                        label=f"{method} · {arm}" + (" (extension)" if arm == "pw+gb" else ""))
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_title(f"synthetic · {variant}")
        ax.set_xlabel("FLOPs (MACs) removed, %")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("worst-group accuracy drop, points (lower is better)")
    axes[0][-1].legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)
