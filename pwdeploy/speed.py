"""Pruning for speed on the deploy runtime: channel rounding per target, the layer allocation, a latency target,
and the measured end-to-end latency recorded beside MACs in report.json (README "MACs vs latency")."""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
from pathlib import Path

import torch

from pwdeploy.exporters.onnx_export import export_onnx

from . import distributed
from .config import RunConfig
from .errors import ConfigError
from .latency.lut import LatencyCost, LatencyLUT, runtime_key
from .latency.measure import measure_pair
from .latency.target import LatencyRequest, prune_to_latency
from .progress import console
from .prune import PruneResult, prune_to_flops
from .prune.allocation import make_allocation, resolve_allocation
from .prune.flops import count_macs_params
from .targets import get_target


def resolve_round_to(config: RunConfig) -> dict:
    """--round-to, or the deployment target's default; recorded with the reason."""
    if config.prune.round_to is not None:
        return {"value": config.prune.round_to, "strict": True, "source": "--round-to"}
    rounding = get_target(config.target).rounding
    value, why = rounding.multiple, rounding.why
    return {"value": value, "strict": False, "source": f"default for {config.target}: {why}; groups narrower than "
            f"{4 * value} channels keep smaller multiples (a quarter of their width, a power of two), and the "
            "last steps use single channels where no aligned step lands within 1 point of the target"}


def latency_threads(config: RunConfig) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return config.prune.latency_threads or cores or 1


def _cost(config: RunConfig, example: torch.Tensor):
    lut = LatencyLUT(threads=latency_threads(config))
    return LatencyCost(lut, example.cpu(), batch=config.prune.latency_batch)


def wants_latency(config: RunConfig) -> bool:
    return config.prune.latency_reduction is not None or config.prune.target_latency_ms is not None


def prune_for_deploy(config: RunConfig, model, original, example: torch.Tensor, input_shape: tuple, **prune_kwargs):
    """Prune ``model`` in place to the MACs or latency target; returns (PruneResult, speed record)."""
    allocation_name, why = resolve_allocation(config.prune.allocation, config.target, config.prune.method)
    record = {"round_to": resolve_round_to(config), "allocation": allocation_name, "allocation_source": why}
    settings = dataclasses.replace(config.prune, round_to=record["round_to"]["value"], allocation=allocation_name)
    prune_kwargs["strict_rounding"] = record["round_to"]["strict"]
    needs_lut = wants_latency(config) or allocation_name == "latency"
    if needs_lut and distributed.world_size() > 1:
        # each process would time the runtime itself and could decide differently: not supported yet
        raise ConfigError("--latency-reduction, --target-latency-ms and --allocation latency run in one process: "
                          "drop --nproc/torchrun for them, or prune to a MACs target (--flops-reduction)")
    cost = _cost(config, example) if needs_lut else None
    allocation = make_allocation(allocation_name, cost)
    if not wants_latency(config):
        return prune_to_flops(model, example, method=config.prune.method,
                              flops_reduction=config.prune.flops_reduction, settings=settings,
                              allocation=allocation, **prune_kwargs), record
    macs_before, params_before = count_macs_params(model, example)
    rounds = []

    def prune_round(reduction: float) -> None:
        # the engine works on CPU-side copies of example inputs for the LUT; the model stays where it is
        rounds.append(prune_to_flops(model, example, method=config.prune.method, flops_reduction=reduction,
                                     settings=settings, cost=cost, allocation=allocation,
                                     widths=rounds[0].widths if rounds else None, **prune_kwargs))

    def measure(a, b):
        return _measure(config, a, b, input_shape)

    request = LatencyRequest(config.prune.latency_reduction, config.prune.target_latency_ms,
                             config.prune.latency_batch)
    with tempfile.TemporaryDirectory(prefix="pwdeploy-lat-") as tmp:
        # the original is timed against every round: export it once
        original_onnx = export_onnx(_cpu_eval(original), Path(tmp) / "original.onnx", tuple(input_shape))
        landing = prune_to_latency(model, original_onnx, request, cost=cost, prune_round=prune_round,
                                   measure=measure)
    record["latency_target"] = {"latency_reduction": request.reduction, "target_latency_ms": request.target_ms,
                                "batch": request.batch, "lut": cost.lut.key, "lut_file": str(cost.lut.path),
                                **landing.to_dict()}
    if not record["latency_target"]["landed"]:
        console.print(f"[yellow]latency target: measured {landing.measured_ms:.2f} ms against "
                      f"{landing.requested_ms:.2f} ms requested ({100 * landing.error:+.1f}%)[/]")
    macs_after, params_after = count_macs_params(model, example)
    steps = [step for r, info in zip(rounds, landing.rounds) if not info["undone"] for step in r.steps]
    importance = rounds[-1].importance if rounds else {"name": config.prune.method}
    return PruneResult(macs_before, macs_after, params_before, params_after, steps, importance=importance), record


def _measure(config: RunConfig, original, pruned, input_shape: tuple, batch: int | None = None) -> dict:
    return measure_pair(_cpu_eval(original), _cpu_eval(pruned), input_shape,
                        batch=batch or config.prune.latency_batch, threads=latency_threads(config))


def _cpu_eval(model):
    if isinstance(model, torch.nn.Module):
        return copy.deepcopy(model).cpu().eval()
    return model


def measured_latency(config: RunConfig, original_onnx: Path, model_onnx: Path, input_shape: tuple) -> dict:
    """End-to-end latency of the exported original and pruned ONNX on ONNX Runtime CPU, batch 1 and the
    latency batch, timed alternately (report.json "latency")."""
    threads = latency_threads(config)
    batches = sorted({1, config.prune.latency_batch})
    timed = {b: _measure(config, original_onnx, model_onnx, input_shape, b) for b in batches}
    record = {"runtime": runtime_key("cpu", threads), "batches": {str(b): t for b, t in timed.items()}}
    for b, t in timed.items():  # the short form report.json shows beside MACs
        record[f"batch_{b}"] = {"original": t["original_ms"], "pruned": t["pruned_ms"], "speedup": t["speedup"]}
    return record
