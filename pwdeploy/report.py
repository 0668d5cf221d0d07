"""The run report: report.json (schema pwdeploy.report/1), report.md, a rich table and a PNG."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from .fsutil import atomic_path, write_text
from .metrics import accuracy_change, fmt_points, worst_group, worst_group_drop


def summarize(metrics: dict) -> dict:
    """Changes against the original model and the worst group, for every model in ``metrics``."""
    original = metrics["original"]
    out = {"changes": {}, "worst_group": {}}
    for name, m in metrics.items():
        group, acc = worst_group(m)
        out["worst_group"][name] = {"group": group, "accuracy": acc}
        if name != "original":
            out["changes"][name] = accuracy_change(m, original)
            drop_group, drop = worst_group_drop(m, original)
            out["changes"][name]["worst_group_drop"] = {"group": drop_group, "points": drop}
    return out


def loss_tag(report: dict) -> str:
    """Short name of the loss a run used: ce, pw, or pw+gb (PW with pwdeploy's group-balance extension),
    kd, kd+pw, and +pseudo for the label-free pseudo-group balance."""
    tag = report["loss"]
    settings = ((report.get("loss_fn") or {}).get("retraining") or {}).get("settings") or {}
    if tag == "kd" and settings.get("pw_weights"):
        tag += "+pw"
    if tag != "ce" and report.get("pseudo_groups", "none") != "none":
        return tag + ("+clusters" if report["pseudo_groups"] == "clusters" else "+pseudo")
    return tag + ("+gb" if tag != "ce" and report.get("group_balanced") else "")


def loss_label(report: dict) -> str:
    """The loss with the settings that change it, e.g. "pw (gamma 0.5, w_min 0.8, no label correction)"."""
    weight = ((report.get("loss_fn") or {}).get("retraining") or {}).get("disagreement_weight")
    label = _loss_label(report)
    return label + (f" + disagreement weight {weight:g} (extension, label-free)" if weight else "")


def _loss_label(report: dict) -> str:
    if report["loss"] == "kd":
        return _kd_label(report)
    if report["loss"] == "gdro":
        return _gdro_label(report)
    if report["loss"] != "pw":
        return report["loss"]
    pw = report.get("pw") or {}
    text = f"pw (gamma {pw.get('gamma', 0):g}, w_min {pw.get('min_weight', 0):g}"
    text += ", no label correction)" if pw.get("label_correction") is False else ")"
    if report.get("pw_applies_to", "both") != "both":
        text += f" on {report['pw_applies_to']} only"
    if report.get("pseudo_groups", "none") != "none":
        return text + _balance_label(report)
    if not report.get("group_balanced"):
        return text
    strength = report.get("group_balance_strength", 1.0)
    return text + " + group balance (extension" + (f", strength {strength:g})" if strength != 1.0 else ")")


def _kd_label(report: dict) -> str:
    kd = (((report.get("loss_fn") or {}).get("retraining") or {}).get("settings")) or {}
    text = f"kd (distillation, T {kd.get('temperature', 0):g}, alpha {kd.get('alpha', 0):g}"
    text += ", PW weights)" if kd.get("pw_weights") else ")"
    return text + _balance_label(report)


def _gdro_label(report: dict) -> str:
    g = (((report.get("loss_fn") or {}).get("retraining") or {}).get("settings")) or {}
    base = "distillation (extension)" if g.get("base") == "kd" else "ce"
    over = {"clusters": "feature-cluster pseudo-groups (extension, label-free)",
            "error-set": "error-set pseudo-groups (extension, label-free)"}.get(report.get("pseudo_groups"),
                                                                                 "dataset groups")
    if g.get("form") == "constraint":
        return (f"gdro constraint (per-group accuracy-gap multipliers after Balancing Act, Hashemizadeh et al. 2024; "
                f"extension: dual step {g.get('step_size', 0):g}, tolerance {g.get('tolerance', 0):g} points, {base}) "
                f"over {over}")
    return (f"gdro (group DRO, Sagawa et al. 2020: step {g.get('step_size', 0):g}, adjustment "
            f"{g.get('adjustment', 0):g}, {base}) over {over}")


def _balance_label(report: dict) -> str:
    if report.get("pseudo_groups", "none") == "clusters":
        return " + pseudo-group balance over feature clusters (extension, label-free)"
    if report.get("pseudo_groups", "none") != "none":
        return " + pseudo-group balance (extension, label-free)"
    return " + group balance (extension)" if report.get("group_balanced") else ""


def method_label(report: dict) -> str:
    """The importance criterion, named honestly: FairGRAPE here is a channel-level adaptation."""
    return "fairgrape (channel-level adaptation of Lin et al. 2022)" if report["method"] == "fairgrape" \
        else report["method"]


def comparison_table(report: dict, title: str | None = None) -> Table:
    """Rows: groups then overall; columns: accuracy of each model and its change against the original."""
    metrics = report["metrics"]
    names = list(metrics)
    table = Table(title=title or f"{method_label(report)} / {loss_label(report)} at "
                                 f"{100 * report['flops_reduction']:.1f}% MACs removed")
    table.add_column("group")
    table.add_column("n", justify="right")
    for name in names:
        table.add_column(f"{name} acc %", justify="right")
        if name != "original":
            table.add_column("Δ vs original", justify="right")
    # The group that ends up worst in the last (most compressed) model.
    worst = report["worst_group"].get(names[-1], {}).get("group")
    rows = [(g, metrics["original"]["groups"][g]["n"]) for g in metrics["original"]["groups"]]
    rows.append(("overall", metrics["original"]["overall"]["n"]))
    for group, n in rows:
        cells = [f"[bold red]{group}[/] (worst)" if group == worst else group, str(n)]
        for name in names:
            entry = metrics[name]["overall"] if group == "overall" else metrics[name]["groups"][group]
            cells.append(fmt_points(entry["accuracy"]))
            if name != "original":
                ref = metrics["original"]["overall"] if group == "overall" else metrics["original"]["groups"][group]
                change = None if entry["accuracy"] is None else entry["accuracy"] - ref["accuracy"]
                cells.append(fmt_points(change, signed=True))
        table.add_row(*cells)
    return table


def markdown(report: dict) -> str:
    metrics = report["metrics"]
    names = list(metrics)
    lines = [f"# pwdeploy report: {method_label(report)} / {loss_label(report)}", "",
             f"- MACs: {report['macs']['original']:,} -> {report['macs']['pruned']:,} "
             f"({100 * report['flops_reduction']:.2f}% removed, target {100 * report['flops_reduction_target']:.2f}%)",
             f"- Parameters: {report['params']['original']:,} -> {report['params']['pruned']:,}",
             f"- Data: {report['dataset']} (test split), groups: {', '.join(report['group_names'])}", "",
             "| group | n | " + " | ".join(f"{n} acc %" for n in names) + " | Δ pruned vs original |",
             "|---|---:|" + "---:|" * len(names) + "---:|"]
    for group in list(metrics["original"]["groups"]) + ["overall"]:
        def entry(m):
            return m["overall"] if group == "overall" else m["groups"][group]
        accs = [entry(metrics[n])["accuracy"] for n in names]
        change = report["changes"]["pruned"]["overall" if group == "overall" else "groups"]
        delta = change if group == "overall" else change[group]
        lines.append(f"| {group} | {entry(metrics['original'])['n']} | " + " | ".join(fmt_points(a) for a in accs)
                     + f" | {fmt_points(delta, True)} |")
    drop = report["changes"]["pruned"]["worst_group_drop"]
    lines += ["", f"Largest group drop: **{drop['group']}**, {drop['points']:.2f} points.", ""]
    lines += _int8_protection_lines(report)
    if report.get("recipes"):
        from .selection import recipes_markdown

        lines += recipes_markdown(report["recipes"]) + ["![recipes](recipes.png)", ""]
    lines += _stopping_lines(report)
    return "\n".join(lines)


def _stopping_lines(report: dict) -> list:
    """--max-group-drop / --flops-reduction auto / gradual schedule: every round and what was kept."""
    record = report.get("stopping")
    if not record:
        return []
    bound = record["max_group_drop"]
    lines = [f"## Pruning in rounds: {record['rule']} (extension)", "",
             f"Bound: {'none' if bound is None else f'{bound:g} points per validation group'}; reached "
             f"{100 * record['reached']:.1f}% MACs removed of {100 * record['target']:.1f}% "
             f"({'stopped early' if record['stopped_early'] else 'to the end'}"
             f"{'' if record['met'] else '; NO tried reduction met the bound: the least pruned ships'}).", "",
             "| round target % | reached % | worst validation group | its accuracy | worst drop | kept |",
             "|---:|---:|---|---:|---:|:-:|"]
    for r in record["rounds"]:
        lines.append(f"| {100 * r['target_reduction']:.1f} | {100 * r['reduction']:.1f} | {r['worst_group']} | "
                     f"{fmt_points(r['worst_group_accuracy'])} | {fmt_points(r['worst_drop'], True)} | "
                     f"{'yes' if r['kept'] else 'no'} |")
    return lines + ["", "![rounds](stopping.png)", ""]


def _int8_protection_lines(report: dict) -> list:
    """The group-aware INT8 model (--protect-groups): float layers, worst groups, latency cost."""
    record = report.get("artifacts", {}).get("model.int8.onnx", {}).get("group_protection")
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


def render_reports(run_dir: Path, report: dict) -> None:
    """report.md and report.png from report.json's content (written by pwdeploy.rundir.RunDir only)."""
    write_text(run_dir / "report.md", markdown(report))
    plot_groups(report, run_dir / "report.png")
    if report.get("recipes"):
        from .selection import plot_recipes

        plot_recipes(report["recipes"], run_dir / "recipes.png")
    if (report.get("stopping") or {}).get("curve"):
        from .trajectory import plot_curve

        plot_curve(report["stopping"], run_dir / "stopping.png")


def plot_groups(report: dict, path: Path) -> None:
    """Bar chart: accuracy per group for every model in the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = report["metrics"]
    groups = list(metrics["original"]["groups"]) + ["overall"]
    names = list(metrics)
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(groups), 3.6))
    for i, name in enumerate(names):
        vals = [(metrics[name]["overall"] if g == "overall" else metrics[name]["groups"][g])["accuracy"] or 0
                for g in groups]
        ax.bar(np.arange(len(groups)) + i * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(groups)) + width * (len(names) - 1) / 2, groups)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{report['method']} / {loss_tag(report)}, {100 * report['flops_reduction']:.1f}% MACs removed")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
