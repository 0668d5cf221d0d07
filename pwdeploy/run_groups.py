"""Which groups a compress run works with, and the checks that need them (the glue between ``pwdeploy.api`` and
``pwdeploy.pseudo_groups`` / ``pwdeploy.trajectory``).

- training: the dataset's groups, or with ``--pseudo-groups clusters`` the original's feature clusters (the
  training split is relabelled, so group balance, FairGRAPE, ``--loss gdro`` all see them);
- validation (``--select``, ``--recipes``, ``--max-group-drop``): the split's real groups where it has at least
  two, else the pseudo-groups (assigned from the original's features/logits and the labels, never the groups);
- report: the pseudo-groups' sizes and, for reporting only, their overlap with real groups on val/test.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .data import GroupedDataset
from .errors import DataError
from .pseudo_groups import PseudoGroups, build_pseudo_groups, features_and_logits, overlap, relabelled
from .trajectory import run_rounds


def _present(dataset: GroupedDataset) -> int:
    if not len(dataset):
        return 0
    return int((np.bincount(dataset.groups, minlength=len(dataset.group_names)) > 0).sum())


def pseudo_for(config, inputs) -> PseudoGroups:
    """The run's pseudo-groups of ``config.pseudo_groups``, built once from the frozen original on the train split."""
    key = (config.pseudo_groups, repr(config.clusters), config.seed)
    if key not in inputs.pseudo:
        features, logits = features_and_logits(inputs.original, inputs.train_set, inputs.device,
                                               loader=config.loader)
        inputs.pseudo[key] = build_pseudo_groups(config.pseudo_groups, features, logits, inputs.train_set.labels,
                                                 config.clusters, config.seed)
    return inputs.pseudo[key]


def run_train_set(config, inputs) -> GroupedDataset:
    if config.pseudo_groups != "clusters":
        return inputs.train_set
    pg = pseudo_for(config, inputs)
    return relabelled(inputs.train_set, pg.train_ids, pg.names)


def _assign(config, inputs, dataset: GroupedDataset) -> np.ndarray:
    pg = pseudo_for(config, inputs)
    features, logits = features_and_logits(inputs.original, dataset, inputs.device, loader=config.loader,
                                           description=f"original model features ({dataset.split})")
    return pg.assign(features, logits, dataset.labels)


def gdro_group_counts(config, train_set: GroupedDataset, original) -> torch.Tensor:
    """Training samples per group for --loss gdro; at least two groups must have samples."""
    if config.pseudo_groups == "error-set":
        from .loss import pseudo_group_names, pseudo_groups

        ids = pseudo_groups(original.cache.cpu(), torch.from_numpy(train_set.labels)).numpy()
        count = len(pseudo_group_names(config.model.num_classes or 2))
    else:
        ids, count = train_set.groups, len(train_set.group_names)
    counts = torch.from_numpy(np.bincount(ids, minlength=count)).double()
    if int((counts > 0).sum()) < 2:
        raise DataError(f"--loss gdro needs at least two groups in the training split, but {train_set.name} has "
                        f"training images in {int((counts > 0).sum())}: add --pseudo-groups clusters (label-free) "
                        "or use another --loss")
    return counts


def check_group_options(config, train_set: GroupedDataset) -> None:
    """Before any work: gdro over real groups needs them in the training split."""
    if config.loss == "gdro" and config.pseudo_groups == "none" and _present(train_set) < 2:
        raise DataError(f"--loss gdro needs group labels in the training split, but {train_set.name} has training "
                        f"images in {_present(train_set)} group(s): add --pseudo-groups clusters (label-free)")


def prepare_validation(config, inputs) -> None:
    """A validation split without two labelled groups gets the pseudo-groups (the caller allowed it)."""
    val = inputs.val_set
    if val is None or _present(val) >= 2 or config.pseudo_groups == "none":
        return
    pg = pseudo_for(config, inputs)
    inputs.val_set = relabelled(val, _assign(config, inputs, val), pg.names)


def pseudo_report(config, inputs) -> dict | None:
    """report.json ``pseudo_groups_found``: sizes per pseudo-group and, where a split has real groups, their
    overlap (reporting only: nothing is chosen on it)."""
    if config.pseudo_groups == "none":
        return None
    pg = pseudo_for(config, inputs)
    out = pg.record()
    out["overlap_with_real_groups"] = {}
    for name, split in (("validation", inputs.val_set), ("test", inputs.test_set)):
        if split is None or _present(split) < 2 or split.group_names == pg.names:
            continue
        out["overlap_with_real_groups"][name] = overlap(_assign(config, inputs, split), split.groups, pg.names,
                                                        split.group_names)
    return out


def prune_in_rounds(config, inputs, pruned, prune_kwargs: dict, retrain, evaluate_on):
    """``pwdeploy.trajectory.run_rounds`` wired to this run's pruning, retraining and validation split."""
    from .speed import prune_for_deploy

    if inputs.reference_val is None and inputs.val_set is not None:
        inputs.reference_val = evaluate_on(inputs.original, inputs.val_set, "original (validation)")

    def prune(model, fraction, widths):
        round_config = dataclasses.replace(config, prune=dataclasses.replace(config.prune, flops_reduction=fraction))
        return prune_for_deploy(round_config, model, inputs.original, inputs.example,
                                tuple(inputs.example.shape[1:]), widths=widths, **prune_kwargs)

    def fit_epochs(model, epochs, index):
        return retrain(model, dataclasses.replace(config.retrain, epochs=epochs), config.seed + index)

    def evaluate_val(model):  # without a validation split (gradual schedule alone) nothing is checked
        if inputs.val_set is None:
            return {"groups": {}}
        return evaluate_on(model, inputs.val_set, "validation groups")

    return run_rounds(config, pruned, prune=prune, fit_epochs=fit_epochs, evaluate_val=evaluate_val,
                      reference_val=inputs.reference_val or {"groups": {}},
                      evaluate_test=lambda m: evaluate_on(m, inputs.test_set, "pruned (before retraining)"),
                      example=inputs.example)
