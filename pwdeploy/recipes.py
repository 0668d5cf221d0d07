"""Recipes for ``--recipes``: a name such as ``pw+gb`` or ``fairgrape`` -> the settings it changes.

A recipe is ``+``-joined tokens: a registered loss (``ce``, ``pw``, ``kd``; ``kd+pw`` = distillation with
PW weights), a registered importance criterion (``fairgrape``, ``taylor``...; default: the run's
``--method``), ``gb`` (group balance over the dataset's groups: needs training group labels) and
``pseudo`` (group balance over label x original right/wrong pseudo-groups: label-free) or ``clusters`` (the
original's feature clusters as the groups: label-free; with ``gdro`` the groups it weights). Without a loss token
the loss is CE (as in the FairGRAPE paper). Every candidate gets the run's MACs target and other settings.
"""

from __future__ import annotations

import copy

from .config import RunConfig
from .errors import ConfigError
from .registry import IMPORTANCES, LOSSES


def parse_recipe(name: str) -> dict:
    """The settings a recipe sets: loss, method (or None), group_balanced, pseudo_groups, kd_pw_weights."""
    tokens = [t.strip() for t in name.split("+") if t.strip()]
    if not tokens:
        raise ConfigError(f"empty recipe in --recipes {name!r}: use e.g. ce,pw,pw+gb,kd,fairgrape")
    losses = [t for t in tokens if t in LOSSES.names()]
    methods = [t for t in tokens if t in IMPORTANCES.names()]
    unknown = [t for t in tokens if t not in losses + methods + ["gb", "pseudo", "clusters"]]
    if unknown:
        raise ConfigError(f"unknown recipe part {unknown[0]!r} in {name!r}: use losses ({', '.join(LOSSES.names())}), "
                          f"methods ({', '.join(IMPORTANCES.names())}), gb, pseudo or clusters")
    kd_pw = sorted(losses) == ["kd", "pw"]
    if len(losses) > 1 and not kd_pw or len(methods) > 1:
        raise ConfigError(f"recipe {name!r} names more than one loss or method (only kd+pw combines)")
    return {"loss": "kd" if kd_pw else (losses[0] if losses else "ce"), "method": methods[0] if methods else None,
            "group_balanced": "gb" in tokens,
            "pseudo_groups": "clusters" if "clusters" in tokens else "error-set" if "pseudo" in tokens else "none",
            "kd_pw_weights": kd_pw}


def apply_recipe(config: RunConfig, name: str) -> RunConfig:
    """A copy of ``config`` with the recipe's settings (the MACs target and everything else unchanged)."""
    recipe = parse_recipe(name)
    out = copy.deepcopy(config)
    out.loss = recipe["loss"]
    out.prune.method = recipe["method"] or config.prune.method
    out.group_balanced = recipe["group_balanced"]
    out.pseudo_groups = recipe["pseudo_groups"]
    out.kd.pw_weights = recipe["kd_pw_weights"]
    out.recipes = []
    return out
