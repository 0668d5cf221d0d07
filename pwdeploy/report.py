"""What people read of a run: report.md, a rich table and report.png, rendered from the typed ``Report``
(pwdeploy.records; report.json itself is written by pwdeploy.rundir)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

import matplotlib
import numpy as np

from .fsutil import atomic_path, write_text
from .metrics import fmt_points
from .records import ModelResult, Report, Score, label_view, to_json


def loss_tag(report) -> str:
    """Short name of the loss a run used: ce, pw, or pw+gb (PW with pwdeploy's group-balance extension),
    kd, kd+pw, and +pseudo for the label-free pseudo-group balance. ``report``: a Report (or its JSON form)."""
    r = label_view(report)
    tag = r.loss
    if tag == "kd" and r.retraining_settings.get("pw_weights"):
        tag += "+pw"
    if tag != "ce" and (r.pseudo_groups or "none") != "none":
        return tag + ("+clusters" if r.pseudo_groups == "clusters" else "+pseudo")
    return tag + ("+gb" if tag != "ce" and r.group_balanced else "")


def loss_label(report) -> str:
    """The loss with the settings that change it, e.g. "pw (gamma 0.5, w_min 0.8, no label correction)"."""
    r = label_view(report)
    weight = (((r.loss_fn or {}).get("retraining") or {}).get("disagreement_weight")
              if isinstance(r.loss_fn, dict) else None)
    label = _loss_label(r)
    return label + (f" + disagreement weight {weight:g} (extension, label-free)" if weight else "")


def _loss_label(r) -> str:
    if r.loss == "kd":
        return _kd_label(r)
    if r.loss == "gdro":
        return _gdro_label(r)
    if r.loss != "pw":
        return r.loss
    pw = r.pw or {}
    text = f"pw (gamma {pw.get('gamma', 0):g}, w_min {pw.get('min_weight', 0):g}"
    text += ", no label correction)" if pw.get("label_correction") is False else ")"
    if (r.pw_applies_to or "both") != "both":
        text += f" on {r.pw_applies_to} only"
    if (r.pseudo_groups or "none") != "none":
        return text + _balance_label(r)
    if not r.group_balanced:
        return text
    strength = 1.0 if r.group_balance_strength is None else r.group_balance_strength
    return text + " + group balance (extension" + (f", strength {strength:g})" if strength != 1.0 else ")")


def _kd_label(r) -> str:
    kd = r.retraining_settings
    text = f"kd (distillation, T {kd.get('temperature', 0):g}, alpha {kd.get('alpha', 0):g}"
    text += ", PW weights)" if kd.get("pw_weights") else ")"
    return text + _balance_label(r)


def _gdro_label(r) -> str:
    g = r.retraining_settings
    base = "distillation (extension)" if g.get("base") == "kd" else "ce"
    over = {"clusters": "feature-cluster pseudo-groups (extension, label-free)",
            "error-set": "error-set pseudo-groups (extension, label-free)"}.get(r.pseudo_groups, "dataset groups")
    if g.get("form") == "constraint":
        return (f"gdro constraint (per-group accuracy-gap multipliers after Balancing Act, Hashemizadeh et al. 2024; "
                f"extension: dual step {g.get('step_size', 0):g}, tolerance {g.get('tolerance', 0):g} points, {base}) "
                f"over {over}")
    return (f"gdro (group DRO, Sagawa et al. 2020: step {g.get('step_size', 0):g}, adjustment "
            f"{g.get('adjustment', 0):g}, {base}) over {over}")


def _balance_label(r) -> str:
    if (r.pseudo_groups or "none") == "clusters":
        return " + pseudo-group balance over feature clusters (extension, label-free)"
    if (r.pseudo_groups or "none") != "none":
        return " + pseudo-group balance (extension, label-free)"
    return " + group balance (extension)" if r.group_balanced else ""


def method_label(report) -> str:
    """The importance criterion, named honestly: FairGRAPE here is a channel-level adaptation."""
    method = label_view(report).method
    return "fairgrape (channel-level adaptation of Lin et al. 2022)" if method == "fairgrape" else method


def comparison_table(report: Report, title: str | None = None) -> Table:
    """Rows: groups then overall; columns: accuracy of each model and its change against the original."""
    names = list(report.metrics)
    table = Table(title=title or f"{method_label(report)} / {loss_label(report)} at "
                                 f"{100 * report.flops_reduction:.1f}% MACs removed")
    table.add_column("group")
    table.add_column("n", justify="right")
    for name in names:
        table.add_column(f"{name} acc %", justify="right")
        if name != "original":
            table.add_column("Δ vs original", justify="right")
    # The group that ends up worst in the last (most compressed) model.
    worst = report.worst_group[names[-1]].group if names[-1] in report.worst_group else None
    results = {name: report.result(name) for name in names}
    original = results["original"]
    rows = list(original.by_group) + ["overall"]
    for group in rows:
        n = (original.overall if group == "overall" else original.by_group[group]).n
        cells = [f"[bold red]{group}[/] (worst)" if group == worst else group, str(n)]
        for name in names:
            acc = _score(results[name], group).accuracy
            cells.append(fmt_points(acc))
            if name != "original":
                cells.append(fmt_points(None if acc is None else acc - _score(original, group).accuracy, signed=True))
        table.add_row(*cells)
    return table


def _score(result: ModelResult, group: str) -> Score:
    return result.overall if group == "overall" else result.by_group[group]


def markdown(report: Report) -> str:
    names = list(report.metrics)
    lines = [f"# pwdeploy report: {method_label(report)} / {loss_label(report)}", "",
             f"- MACs: {report.macs.original:,} -> {report.macs.pruned:,} "
             f"({100 * report.flops_reduction:.2f}% removed, target {100 * report.flops_reduction_target:.2f}%)",
             f"- Parameters: {report.params.original:,} -> {report.params.pruned:,}",
             f"- Data: {report.dataset} (test split), groups: {', '.join(report.group_names)}", "",
             "| group | n | " + " | ".join(f"{n} acc %" for n in names) + " | Δ pruned vs original |",
             "|---|---:|" + "---:|" * len(names) + "---:|"]
    results = {name: report.result(name) for name in names}
    change = report.changes["pruned"]
    for group in list(results["original"].by_group) + ["overall"]:
        accs = [_score(results[n], group).accuracy for n in names]
        delta = change.overall if group == "overall" else change.groups[group]
        lines.append(f"| {group} | {_score(results['original'], group).n} | " + " | ".join(fmt_points(a) for a in accs)
                     + f" | {fmt_points(delta, True)} |")
    drop = report.changes["pruned"].worst_group_drop
    lines += ["", f"Largest group drop: **{drop.group}**, {drop.points:.2f} points.", ""]
    lines += _int8_protection_lines(report)
    if report.recipes:
        from .selection import recipes_markdown  # here: selection needs torch, which verify's path avoids

        lines += recipes_markdown(report.recipes) + ["![recipes](recipes.png)", ""]
    lines += _stopping_lines(report)
    return "\n".join(lines)


def _stopping_lines(report: Report) -> list:
    """--max-group-drop / --flops-reduction auto / gradual schedule: every round and what was kept."""
    record = report.stopping
    if not record:
        return []
    bound = record.max_group_drop
    lines = [f"## Pruning in rounds: {record.rule} (extension)", "",
             f"Bound: {'none' if bound is None else f'{bound:g} points per validation group'}; reached "
             f"{100 * record.reached:.1f}% MACs removed of {100 * record.target:.1f}% "
             f"({'stopped early' if record.stopped_early else 'to the end'}"
             f"{'' if record.met else '; NO tried reduction met the bound: the least pruned ships'}).", "",
             "| round target % | reached % | worst validation group | its accuracy | worst drop | kept |",
             "|---:|---:|---|---:|---:|:-:|"]
    for r in record.rounds:
        lines.append(f"| {100 * r['target_reduction']:.1f} | {100 * r['reduction']:.1f} | {r['worst_group']} | "
                     f"{fmt_points(r['worst_group_accuracy'])} | {fmt_points(r['worst_drop'], True)} | "
                     f"{'yes' if r['kept'] else 'no'} |")
    return lines + ["", "![rounds](stopping.png)", ""]


def _int8_protection_lines(report: Report) -> list:
    """The group-aware INT8 model (--protect-groups): float layers, worst groups, latency cost."""
    int8 = report.artifacts.get("model.int8.onnx")
    record = int8.group_protection if int8 is not None else None
    if not record:
        return []
    val, lat = record["validation"], record["latency"]["models"]
    lines = ["## INT8 group protection", "",
             f"- Layers kept in float: {len(record['float_layers'])} of {record['layers_total']} "
             f"({', '.join(record['float_layers']) or 'none'}; budget {record['budget']})",
             f"- Validation, worst group vs fp32: plain INT8 {val['plain_int8']['worst_group']} "
             f"{fmt_points(val['plain_int8']['worst_change'], True)}, mixed {val['mixed']['worst_group']} "
             f"{fmt_points(val['mixed']['worst_change'], True)} points "
             f"({'every group within tolerance' if record['passed_on_validation'] else 'NOT within tolerance'})"]
    if record.get("test"):
        test = record["test"]
        lines.append(f"- Test (verification set), worst group vs the PyTorch reference: plain INT8 "
                     f"{fmt_points(test['plain_int8']['worst_change'], True)}, "
                     f"mixed {fmt_points(test['mixed']['worst_change'], True)}")
    lines += [f"- ONNX Runtime latency ({record['latency']['provider']}, batch {record['latency']['batch']}): fp32 "
              f"{lat['fp32']['median_ms']:.3f} ms, plain INT8 {lat['plain_int8']['median_ms']:.3f} ms, mixed "
              f"{lat['mixed']['median_ms']:.3f} ms", ""]
    return lines


def render_reports(run_dir: Path, report: Report) -> None:
    """report.md and report.png from the report (called by pwdeploy.rundir.RunDir only)."""
    write_text(run_dir / "report.md", markdown(report))
    plot_groups(report, run_dir / "report.png")
    # selection and trajectory need torch, which verify's import path avoids: imported only when used
    if report.recipes:
        from .selection import plot_recipes

        plot_recipes(report.recipes, run_dir / "recipes.png")
    if report.stopping is not None and report.stopping.curve:
        from .trajectory import plot_curve

        plot_curve(to_json(report.stopping), run_dir / "stopping.png")


def plot_groups(report: Report, path: Path) -> None:
    """Bar chart: accuracy per group for every model in the report."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the Agg backend

    results = {name: report.result(name) for name in report.metrics}
    groups = list(results["original"].by_group) + ["overall"]
    names = list(results)
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(groups), 3.6))
    for i, name in enumerate(names):
        vals = [_score(results[name], g).accuracy or 0 for g in groups]
        ax.bar(np.arange(len(groups)) + i * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(groups)) + width * (len(names) - 1) / 2, groups)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{report.method} / {loss_tag(report)}, {100 * report.flops_reduction:.1f}% MACs removed")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
