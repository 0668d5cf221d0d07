"""Per-group INT8 sensitivity, shown: the terminal table and the layers × groups heatmap.

The table itself (leave-one-in-float harm per layer and group) is computed in ``pwdeploy.calibration.harm``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # a Figure of its own, no pyplot: no global backend or figure registry
from rich import box
from rich.table import Table

from pwdeploy.fsutil import atomic_path

# re-exported: the table is computed in harm (which protect imports without matplotlib)
from .harm import SCHEMA, rank_for_group, sensitivity  # noqa: F401


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
