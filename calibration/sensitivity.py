"""Per-group INT8 sensitivity: which layer's quantization costs which group.

Leave-one-in-float: for every weighted layer, the INT8 model with only that layer kept in float is scored per
group. A layer's *harm* to a group is the accuracy that group gets back when that layer is not quantized
(points, positive = quantizing it hurts the group), read against the fully quantized model on the same images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # a Figure of its own, no pyplot: no global backend or figure registry
from rich import box
from rich.table import Table

from pwdeploy.fsutil import atomic_path

from .probe import Int8Probe

SCHEMA = "pwdeploy.int8_sensitivity/1"


def sensitivity(probe: Int8Probe, *, on_layer=None) -> dict:
    """The layers × groups harm table (points) with the logit-error reduction, plus the full-INT8 baseline."""
    base = probe.score(())
    rows = []
    for layer in probe.layers:
        variant = probe.score((layer,))
        rows.append({
            "layer": layer,
            "harm": {g: _diff(variant.change[g], base.change[g]) for g in probe.data.group_names},
            "logit_error_reduction": {g: _diff(base.logit_error[g], variant.logit_error[g])
                                      for g in probe.data.group_names},
            "worst_change_if_float": variant.worst_change,
        })
        if on_layer is not None:
            on_layer(layer)
    return {"schema": SCHEMA, "method": "leave one layer in float (no Q/DQ around it), all others INT8",
            "data": probe.data.describe(), "tolerance": probe.tolerance, "provider": probe.provider,
            "weight_bits": 8 if probe.full_range else 7, "calibration_method": probe.method,
            "full_int8": base.to_dict(), "layers": rows}


def _diff(a, b):
    return None if a is None or b is None else float(a - b)


def rank_for_group(table: dict, group: str) -> list:
    """Layers ordered by harm to ``group`` (largest first), ties by its logit-error reduction."""
    def key(row):
        harm = row["harm"].get(group)
        err = row["logit_error_reduction"].get(group)
        return (-(harm if harm is not None else 0.0), -(err if err is not None else 0.0))

    return [row["layer"] for row in sorted(table["layers"], key=key)]


def rich_table(table: dict):
    groups = list(table["data"]["groups"])
    base = table["full_int8"]
    title = (f"INT8 harm per group ({table['data']['split']} split, {table['weight_bits']}-bit weights, "
             f"{table['calibration_method']}): points regained when the layer stays float")
    out = Table(title=title, box=box.SIMPLE_HEAD)
    out.add_column("layer")
    for g in groups:
        out.add_column(g, justify="right")
    out.add_row("[bold]full INT8 vs fp32[/]", *[_signed(base["change_vs_fp32"][g]) for g in groups])
    for row in table["layers"]:
        out.add_row(row["layer"], *[_signed(row["harm"][g]) for g in groups])
    return out


def _signed(value) -> str:
    return "-" if value is None else f"{value:+.2f}"


def plot_heatmap(table: dict, path: str | Path) -> None:
    """Layers × groups heatmap of the harm (points regained with the layer in float)."""
    groups = list(table["data"]["groups"])
    layers = [row["layer"] for row in table["layers"]]
    values = np.array([[row["harm"][g] if row["harm"][g] is not None else np.nan for g in groups]
                       for row in table["layers"]], dtype=float).reshape(len(layers), len(groups))
    limit = max(1.0, float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0)
    fig = Figure(figsize=(2.5 + 1.1 * len(groups), 1.2 + 0.35 * max(1, len(layers))))
    ax = fig.subplots()
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_yticks(range(len(layers)), [_short(name) for name in layers], fontsize=7)
    for i in range(len(layers)):
        for j in range(len(groups)):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:+.1f}", ha="center", va="center", fontsize=7)
    base = table["full_int8"]["change_vs_fp32"]
    ax.set_title("INT8 harm by layer and group (points)\nfull INT8 vs fp32: "
                 + ", ".join(f"{g} {_signed(base[g])}" for g in groups), fontsize=9)
    fig.colorbar(image, ax=ax, label="points regained when float")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]
