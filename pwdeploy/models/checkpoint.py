"""pwdeploy checkpoints: architecture + weights + pruned layer shapes, loadable with ``weights_only=True``.

A pruned model cannot be rebuilt from its architecture name alone, so the checkpoint records, per layer,
the integer attributes pruning changes (channels, features, groups). Loading builds the architecture,
applies those attributes, resizes parameters to the stored shapes and loads the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from ..fsutil import atomic_path, not_a_file
from . import create_model

FORMAT = "pwdeploy.checkpoint/1"
# Integer attributes torch-pruning rewrites when it removes channels.
SHAPE_ATTRS = ("in_channels", "out_channels", "groups", "num_features", "in_features", "out_features")


def layer_shapes(model: nn.Module) -> dict[str, dict[str, int]]:
    shapes = {}
    for name, module in model.named_modules():
        attrs = {a: int(getattr(module, a)) for a in SHAPE_ATTRS if isinstance(getattr(module, a, None), int)}
        if attrs:
            shapes[name] = attrs
    return shapes


def save_checkpoint(model: nn.Module, path: str | Path, *, arch: str, num_classes: int,
                    meta: dict[str, Any] | None = None) -> None:
    payload = {
        "format": FORMAT,
        "arch": arch,
        "num_classes": int(num_classes),
        "layer_shapes": layer_shapes(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def build_from_checkpoint(payload: dict) -> nn.Module:
    model = create_model(payload["arch"], payload["num_classes"])
    modules = dict(model.named_modules())
    for name, attrs in payload.get("layer_shapes", {}).items():
        if name in modules:
            for attr, value in attrs.items():
                setattr(modules[name], attr, value)
    state = payload["state_dict"]
    for key, tensor in state.items():
        owner_name, _, leaf = key.rpartition(".")
        owner = modules.get(owner_name)
        if owner is None:
            continue
        if leaf in owner._parameters and owner._parameters[leaf] is not None:
            if owner._parameters[leaf].shape != tensor.shape:
                owner._parameters[leaf] = nn.Parameter(torch.empty_like(tensor))
        elif leaf in owner._buffers and owner._buffers[leaf] is not None:
            if owner._buffers[leaf].shape != tensor.shape:
                owner._buffers[leaf] = torch.empty_like(tensor)
    model.load_state_dict(state)
    return model


def load_model(path: str | Path, *, arch: str | None = None, num_classes: int | None = None,
               trust_pickle: bool = False) -> tuple[nn.Module, dict]:
    """Load ``path`` as a pwdeploy checkpoint, a state dict (+ arch/num_classes) or, if trusted, a pickle.

    Returns the model (eval mode, CPU) and a description: arch, num_classes, meta, kind.
    """
    path = Path(path)
    problem = not_a_file(path)
    if problem == "not found":
        raise ModelError(f"model file not found: {path}")
    if problem:
        raise ModelError(f"MODEL {path} {problem}: pass a model file (a pwdeploy checkpoint or a state dict .pt)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for non-weights files
        if not trust_pickle:
            raise ModelError(f"{path} is not a weights-only file (a pickled module?): re-save it with "
                             "model.state_dict() and pass --arch/--num-classes, or pass --trust-pickle "
                             "if you trust its source") from exc
        module = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(module, nn.Module):
            raise ModelError(f"{path} holds a {type(module).__name__}, not a torch.nn.Module") from exc
        if arch is None:
            raise ModelError("a pickled module needs --arch (and --num-classes) so the run can be reloaded "
                             "without pickle later")
        _check_finite(module, path)
        return module.eval(), {"kind": "pickle", "arch": arch, "num_classes": num_classes or _out_dim(module),
                               "meta": {}}

    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        try:
            model = build_from_checkpoint(payload)
        except ModelError:
            raise
        except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ModelError(f"{path} is a damaged or inconsistent pwdeploy checkpoint ({first}): save it again "
                             "with pwdeploy") from exc
        _check_finite(model, path)
        _check_layer_shapes(model, path)
        _check_class_count(model, int(payload["num_classes"]), path)
        return model.eval(), {"kind": "checkpoint", "arch": payload["arch"],
                              "num_classes": payload["num_classes"], "meta": payload.get("meta", {})}
    if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        if arch is None or num_classes is None:
            raise ModelError(f"{path} is a plain state dict: pass --arch (e.g. torchvision:resnet18) and "
                             "--num-classes so pwdeploy can build the model")
        model = create_model(arch, num_classes)
        try:
            model.load_state_dict(payload)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ModelError(f"state dict in {path} does not fit --arch {arch} --num-classes {num_classes}: "
                             f"{first}") from exc
        _check_finite(model, path)
        return model.eval(), {"kind": "state_dict", "arch": arch, "num_classes": num_classes, "meta": {}}
    raise ModelError(f"{path} is neither a pwdeploy checkpoint nor a state dict: save model.state_dict() "
                     "and pass --arch/--num-classes")


def _expected_weight_shape(module: nn.Module) -> tuple | None:
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        return (module.out_channels, module.in_channels // module.groups, *module.kernel_size)
    if isinstance(module, nn.Linear):
        return (module.out_features, module.in_features)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
        return (module.num_features,)
    return None


def _check_layer_shapes(model: nn.Module, path: Path) -> None:
    """Recorded layer attributes and stored weights must agree, or the model fails deep inside a forward."""
    for name, module in model.named_modules():
        want = _expected_weight_shape(module)
        weight = getattr(module, "weight", None)
        if want is not None and isinstance(weight, torch.Tensor) and tuple(weight.shape) != want:
            raise ModelError(f"{path} is an inconsistent pwdeploy checkpoint: layer {name!r} records shape {want} "
                             f"but its weight is {tuple(weight.shape)}; save it again with pwdeploy")


def _check_class_count(model: nn.Module, num_classes: int, path: Path) -> None:
    """The classifier (last Linear layer) must give one logit per class the checkpoint claims."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears and linears[-1].out_features != num_classes:
        raise ModelError(f"{path} claims {num_classes} classes but its classifier gives {linears[-1].out_features} "
                         "logits: the checkpoint is inconsistent; save it again with pwdeploy")


def _check_finite(model: nn.Module, path: Path) -> None:
    """Refuse NaN/inf weights: such a model trains on NaN losses and its metrics mean nothing."""
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ModelError(f"{path}: {name} holds {bad} NaN/inf value(s): the model is damaged or diverged; "
                             "pass a model with finite weights")


def _out_dim(module: nn.Module) -> int:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError("cannot infer the class count of the pickled module: pass --num-classes")
    return linears[-1].out_features
