"""Name -> class registries for plug-ins (importance criteria, losses), timm-style.

A plug-in is one small class with a ``@register_*`` decorator. Built-ins are imported on first use (so the
CLI's ``--help`` lists them without importing torch); other packages add theirs with the decorator, or
without importing anything first through an entry point in the group ``pwdeploy.<kind>``, e.g.
``[project.entry-points."pwdeploy.importances"] mine = "mypkg.prune:MyImportance"``.
Every list of names (CLI help, config checks, report) is read from here.
"""

from __future__ import annotations

import importlib
from importlib import metadata

from .errors import ConfigError, DataError, ModelError


class Registry:
    """One kind of plug-in: importance criteria, losses, models, datasets (each a class or a factory)."""

    def __init__(self, kind: str, group: str, builtins: dict[str, str], error: type = ConfigError):
        self.kind = kind  # the config key it resolves, for messages
        self.group = group  # entry point group
        self._builtins = dict(builtins)  # name -> module that registers it
        self._classes: dict[str, type] = {}
        self.error = error  # the PwdeployError subclass an unknown name raises

    def register(self, name: str):
        """Decorator: ``@register_importance("mine")``; the class (or factory) gets ``name``."""

        def wrap(cls: type) -> type:
            cls.name = name
            self._classes[name] = cls
            return cls

        return wrap

    def _entry_points(self) -> dict:
        try:
            return {ep.name: ep for ep in metadata.entry_points(group=self.group)}
        except Exception:  # noqa: BLE001 - a broken third-party install must not break the built-ins
            return {}

    def names(self) -> list[str]:
        """Every name this registry can resolve (built-ins first, in their declared order)."""
        extra = sorted((set(self._classes) | set(self._entry_points())) - set(self._builtins))
        return list(self._builtins) + extra

    def get(self, name: str) -> type:
        if name not in self._classes:
            if name in self._builtins:
                importlib.import_module(self._builtins[name])
            elif name in (eps := self._entry_points()):
                self.register(name)(eps[name].load())
        if name not in self._classes:
            raise self.error(f"{self.kind} must be one of {', '.join(self.names())}, got {name!r}")
        return self._classes[name]

    def describe(self) -> dict[str, str]:
        """name -> first line of the class docstring (imports the built-ins)."""
        return {n: (self.get(n).__doc__ or "").strip().splitlines()[0] for n in self.names()}


IMPORTANCES = Registry("prune.method", "pwdeploy.importances", {
    "taylor": "pwdeploy.prune.criteria", "autobot": "pwdeploy.prune.criteria",
    "magnitude": "pwdeploy.prune.criteria", "fairgrape": "pwdeploy.prune.fairgrape"})
LOSSES = Registry("loss", "pwdeploy.losses", {
    "pw": "pwdeploy.loss", "ce": "pwdeploy.loss", "kd": "pwdeploy.loss", "gdro": "pwdeploy.loss"})

# pwdeploy's own adapters (name -> module), imported on first use so a missing optional dependency of one never
# breaks the others; other adapters come through @register_dataset or an entry point ("pwdeploy.datasets").
DATASETS = Registry("--data", "pwdeploy.datasets", {
    name: f"pwdeploy.data.{module}" for name, module in (("synthetic", "synthetic"), ("celeba", "celeba"),
                                                         ("cifar10", "cifar10"), ("fitzpatrick17k", "fitzpatrick17k"),
                                                         ("csv", "csv_manifest"))}, error=DataError)
# pwdeploy's own models (name -> module that registers it), imported on first use; others come through
# @register_model or an entry point in the group "pwdeploy.models".
MODELS = Registry("--arch", "pwdeploy.models", {
    "smallcnn": "pwdeploy.models.small", "tinyresnet": "pwdeploy.models.small",
    **{f"cifar_resnet{depth}": "pwdeploy.models.cifar_resnet" for depth in (20, 32, 44, 56)}}, error=ModelError)
MODEL_FAMILIES = ("torchvision", "timm")  # external models, chosen by the prefix before ':' (pwdeploy.models)


def list_datasets() -> list[str]:
    return DATASETS.names()


def list_models() -> list[str]:
    return MODELS.names() + [f"{family}:<name>" for family in MODEL_FAMILIES]


register_importance = IMPORTANCES.register
register_loss = LOSSES.register


def list_importances() -> list[str]:
    return IMPORTANCES.names()


def list_losses() -> list[str]:
    return LOSSES.names()
