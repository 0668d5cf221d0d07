"""The per-group INT8 sensitivity table: which layer's quantization costs which group (rendered by sensitivity).

Leave-one-in-float: for every weighted layer, the INT8 model with only that layer kept in float is scored per
group. A layer's *harm* to a group is the accuracy that group gets back when that layer is not quantized
(points, positive = quantizing it hurts the group), read against the fully quantized model on the same images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the probe loads ONNX Runtime's quantizer; the CLI reads protect's default at start-up
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
