"""Label-free pseudo-groups from the frozen original model (pwdeploy extension, not the PW paper's method).

``--pseudo-groups clusters``: the original's penultimate features (the input of its last linear layer) are
put on the unit sphere and clustered per class with k-means (k-means++ seeding, a few restarts, all following ``--seed``); the number of
clusters per class is ``--clusters K`` or, by default, the one with the best mean silhouette among 1..max_k,
where k > 1 must reach ``min_silhouette`` (0.5 by default) (as GEORGE, Sohoni et al. 2020, which also picks the count by
silhouette; a class without structure stays one group). Hidden subgroups the original tells apart form their own
cluster, and every group-taking option (group balance, FairGRAPE, --loss gdro, --select, --max-group-drop)
then sees them as groups. Validation/test samples are put in the nearest centroid of their labelled class.

``--pseudo-groups error-set``: (label x original right/wrong), JTT-style (pwdeploy.loss.pseudo_groups).
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
from torch import nn

from .config import ClusterSettings
from .data import GroupedDataset
from .errors import ConfigError
from .loss import is_binary_logit, pseudo_group_names, pseudo_groups
from .train import predict_logits

SILHOUETTE_SAMPLE = 1500  # points per class the silhouette is computed on (it is quadratic in them)


class _FeatureTap(nn.Module):
    """Runs the model and returns [penultimate features | logits] per sample."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError("--pseudo-groups clusters needs a model whose output comes from a linear layer "
                              "(its input are the features clustered): use --pseudo-groups error-set")
        self.head = linears[-1]
        self.captured = None
        self.head.register_forward_hook(lambda _m, inputs, _out: setattr(self, "captured", inputs[0]))

    def forward(self, x):
        logits = self.model(x)
        features = self.captured.flatten(1).float()
        return torch.cat([features, logits.reshape(len(x), -1).float()], dim=1)


def features_and_logits(model: nn.Module, dataset: GroupedDataset, device, loader=None,
                        description: str = "original model features") -> tuple[np.ndarray, np.ndarray]:
    """(penultimate features, logits) of ``model`` on every sample of ``dataset``, in order."""
    tap = _FeatureTap(copy.deepcopy(model))
    out = predict_logits(tap, dataset, device, description=description, loader=loader)
    width = tap.head.in_features
    return out[:, :width], out[:, width:]


def _kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    centers = [x[torch.randint(len(x), (1,), generator=gen)].squeeze(0)]
    for _ in range(1, k):
        d = torch.cdist(x, torch.stack(centers)).min(dim=1).values ** 2
        p = d / d.sum() if float(d.sum()) > 0 else torch.full_like(d, 1.0 / len(d))
        centers.append(x[torch.multinomial(p, 1, generator=gen)].squeeze(0))
    return torch.stack(centers)


def kmeans(x: torch.Tensor, k: int, *, seed: int, restarts: int = 4, iters: int = 50
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids (k, d), assignment (n,)) with the lowest inertia over ``restarts`` k-means++ starts."""
    gen = torch.Generator().manual_seed(int(seed))
    best = None
    for _ in range(restarts):
        centers = _kmeans_pp(x, k, gen)
        for _ in range(iters):
            assign = torch.cdist(x, centers).argmin(dim=1)
            new = torch.stack([x[assign == j].mean(0) if bool((assign == j).any()) else centers[j]
                               for j in range(k)])
            if torch.allclose(new, centers):
                break
            centers = new
        assign = torch.cdist(x, centers).argmin(dim=1)
        inertia = float(((x - centers[assign]) ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, centers, assign)
    return best[1], best[2]


def silhouette(x: torch.Tensor, assign: torch.Tensor) -> float:
    """Mean silhouette coefficient (Rousseeuw 1987); 0 for a single cluster."""
    labels = assign.unique()
    if len(labels) < 2:
        return 0.0
    d = torch.cdist(x, x)
    own = torch.zeros(len(x))
    other = torch.full((len(x),), float("inf"))
    alone = torch.zeros(len(x), dtype=torch.bool)
    for j in labels:
        member = assign == j
        n = int(member.sum())
        mean_to = d[:, member].sum(dim=1) / torch.where(member, max(n - 1, 1), n).float()
        own = torch.where(member, mean_to, own)
        other = torch.where(member, other, torch.minimum(other, mean_to))
        alone |= member & (n == 1)
    s = (other - own) / torch.maximum(own, other).clamp_min(1e-12)
    s = torch.where(alone | ~torch.isfinite(s), torch.zeros_like(s), s)  # a singleton scores 0 (Rousseeuw)
    return float(s.mean())


def _direction(x: torch.Tensor) -> torch.Tensor:
    """Features on the unit sphere (cosine k-means): on the benchmark's baselines this isolated the minority in
    more classes than standardised or PCA-whitened features did (docs/concepts/fairness.md)."""
    return torch.nn.functional.normalize(x.float(), dim=1)


@dataclasses.dataclass
class ClassClusters:
    """One class's clustering: standardisation, centroids, and how the count was chosen."""

    label: int
    centroids: torch.Tensor
    scores: dict  # k -> mean silhouette (chosen by the criterion), empty with a fixed --clusters

    def assign(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cdist(_direction(features), self.centroids).argmin(dim=1)


def cluster_class(x: torch.Tensor, label: int, settings: ClusterSettings, seed: int) -> ClassClusters:
    z = _direction(x)
    gen = torch.Generator().manual_seed(int(seed) * 7919 + label)
    sample = z if len(z) <= SILHOUETTE_SAMPLE else z[torch.randperm(len(z), generator=gen)[:SILHOUETTE_SAMPLE]]
    candidates = [settings.k] if settings.k else range(1, settings.max_k + 1)
    best_k, scores, fits = 1, {}, {}
    for k in candidates:
        k = min(k, len(z))
        centroids, _ = kmeans(z, k, seed=seed * 31 + label * 1000 + k)
        fits[k] = centroids
        if not settings.k:
            scores[k] = silhouette(sample, torch.cdist(sample, centroids).argmin(dim=1))
    if settings.k:
        best_k = min(settings.k, len(z))
    else:
        above = {k: s for k, s in scores.items() if k > 1 and s >= settings.min_silhouette}
        best_k = max(above, key=lambda k: (above[k], -k)) if above else 1
    centroids = _merge_small(z, fits[best_k], settings.min_fraction)
    return ClassClusters(label, centroids, {str(k): round(s, 4) for k, s in scores.items()})


def _merge_small(z: torch.Tensor, centroids: torch.Tensor, min_fraction: float) -> torch.Tensor:
    """Drop clusters holding under ``min_fraction`` of the class (their points go to the nearest other)."""
    while len(centroids) > 1:
        counts = torch.bincount(torch.cdist(z, centroids).argmin(dim=1), minlength=len(centroids))
        small = int(counts.argmin())
        if counts[small] >= max(1, min_fraction * len(z)):
            break
        centroids = torch.cat([centroids[:small], centroids[small + 1:]])
    return centroids


@dataclasses.dataclass
class PseudoGroups:
    """Pseudo-group ids for the training split and the rule that assigns them to other splits."""

    kind: str  # "clusters" or "error-set"
    names: list[str]
    train_ids: np.ndarray
    classes: list[ClassClusters] = dataclasses.field(default_factory=list)
    offsets: dict = dataclasses.field(default_factory=dict)  # class -> first group id (clusters)

    def assign(self, features: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Pseudo-group of each sample of another split (its label is used, never its group)."""
        labels_t = torch.from_numpy(np.asarray(labels)).long()
        if self.kind == "error-set":
            return pseudo_groups(torch.from_numpy(logits), labels_t).numpy()
        feats = torch.from_numpy(np.asarray(features)).float()
        out = np.zeros(len(labels), dtype=np.int64)
        for c in self.classes:
            rows = labels_t == c.label
            if bool(rows.any()):
                out[rows.numpy()] = (self.offsets[c.label] + c.assign(feats[rows])).numpy()
        return out

    def record(self) -> dict:
        sizes = np.bincount(self.train_ids, minlength=len(self.names))
        out = {"kind": self.kind, "names": self.names, "train_sizes": {n: int(s) for n, s in zip(self.names, sizes)}}
        if self.kind == "clusters":
            out["per_class"] = {str(c.label): {"clusters": len(c.centroids), "silhouette": c.scores}
                                for c in self.classes}
        return out


def build_pseudo_groups(kind: str, features: np.ndarray, logits: np.ndarray, labels: np.ndarray,
                        settings: ClusterSettings, seed: int) -> PseudoGroups:
    """Pseudo-groups of the training split from the original's features/logits on it."""
    labels = np.asarray(labels, dtype=np.int64)
    if kind == "error-set":
        num_classes = 2 if is_binary_logit(torch.from_numpy(logits)) else logits.shape[1]
        ids = pseudo_groups(torch.from_numpy(logits), torch.from_numpy(labels)).numpy()
        return PseudoGroups(kind, pseudo_group_names(num_classes), ids)
    feats = torch.from_numpy(np.asarray(features)).float()
    classes, offsets, names = [], {}, []
    ids = np.zeros(len(labels), dtype=np.int64)
    for label in sorted(int(c) for c in np.unique(labels)):
        rows = labels == label
        c = cluster_class(feats[torch.from_numpy(rows)], label, settings, seed)
        offsets[label] = len(names)
        names += [f"class {label} cluster {j}" for j in range(len(c.centroids))]
        ids[rows] = (offsets[label] + c.assign(feats[torch.from_numpy(rows)])).numpy()
        classes.append(c)
    return PseudoGroups(kind, names, ids, classes, offsets)


def overlap(pseudo_ids: np.ndarray, real_groups: np.ndarray, pseudo_names: list[str],
            real_names: list[str]) -> dict:
    """For reporting only: counts of each (pseudo-group, real group) pair and each real group's purity,
    the largest share of it that falls in one pseudo-group."""
    table = np.zeros((len(pseudo_names), len(real_names)), dtype=np.int64)
    np.add.at(table, (pseudo_ids, real_groups), 1)
    purity = {}
    for j, name in enumerate(real_names):
        total = table[:, j].sum()
        if total:
            i = int(table[:, j].argmax())
            purity[name] = {"best_pseudo_group": pseudo_names[i], "share_of_group": float(table[i, j] / total),
                            "share_of_pseudo_group": float(table[i, j] / max(1, table[i].sum()))}
    return {"counts": {p: {r: int(table[i, j]) for j, r in enumerate(real_names) if table[i, j]}
                       for i, p in enumerate(pseudo_names)}, "real_groups": purity}


def relabelled(dataset: GroupedDataset, ids: np.ndarray, names: list[str]) -> GroupedDataset:
    """A shallow copy of ``dataset`` whose groups are the pseudo-groups (images and labels shared)."""
    out = copy.copy(dataset)
    out.groups = np.asarray(ids, dtype=np.int64)
    out.group_names = list(names)
    return out
