"""Pruning in rounds (pwdeploy extensions): the fairness stopping rule ``--max-group-drop D``, ``--flops-reduction
auto`` and the gradual retraining schedule, built on ``pwdeploy.prune.stopping``'s pure rule.

- ``--max-group-drop D``: rounds of at most ``stopping.round_size`` of the original MACs towards the target; after
  each round (and its Taylor adaptation steps) the validation groups are scored; the first round that takes a
  group more than D points below the original is undone and the model is retrained from there.
- ``--flops-reduction auto`` (with ``--max-group-drop``): one trajectory through ``stopping.auto_reductions``; at
  each, a copy is retrained with the full budget and scored; the largest reduction whose retrained copy keeps
  every validation group within D ships (that copy: no second retraining).
- ``--retrain-schedule gradual``: the retraining epochs are spread over the pruning, one pruning round per epoch
  (each removing the same share of what is left), each round followed by one epoch; equal total epochs to
  ``end``.
"""

from __future__ import annotations

import copy
import dataclasses

from .config import RunConfig
from .errors import ConfigError
from .prune import PruneResult
from .prune.flops import count_macs_params
from .prune.stopping import auto_reduction, even_targets, geometric_targets, guarded_prune


def uses_rounds(config: RunConfig) -> bool:
    s = config.stopping
    return s.max_group_drop is not None or s.auto or config.retrain_schedule == "gradual"


def check_rounds(config: RunConfig) -> None:
    """Combinations the rounds do not support: one-line errors before any work."""
    from .speed import wants_latency

    s = config.stopping
    if s.auto and s.max_group_drop is None:
        raise ConfigError("--flops-reduction auto needs --max-group-drop D (the bound that decides the reduction)")
    if uses_rounds(config) and wants_latency(config):
        raise ConfigError("--max-group-drop, --flops-reduction auto and --retrain-schedule gradual prune to a MACs "
                          "target: drop --latency-reduction/--target-latency-ms, or these options")
    if s.auto and config.retrain_schedule == "gradual":
        raise ConfigError("--flops-reduction auto retrains a copy at every tried reduction: use it with "
                          "--retrain-schedule end")


@dataclasses.dataclass
class RoundsOutcome:
    """What the rounds produced: the model to ship (or retrain), the pruning record and, where the rounds
    retrained already (auto, gradual), the loss history and the model before retraining's test metrics."""

    model: object
    result: PruneResult
    speed: dict
    record: dict
    history: list | None = None
    before: dict | None = None


def _targets(config: RunConfig) -> list[float]:
    s = config.stopping
    if s.auto:
        return sorted(s.auto_reductions)
    if config.retrain_schedule == "gradual":
        return geometric_targets(config.prune.flops_reduction, max(1, config.retrain.epochs))
    return even_targets(config.prune.flops_reduction, s.round_size)


def run_rounds(config: RunConfig, model, *, prune, fit_epochs, evaluate_val, reference_val, evaluate_test,
               example) -> RoundsOutcome:
    """``prune(model, fraction, widths)`` -> (PruneResult, speed) removes ``fraction`` of the model's current MACs;
    ``fit_epochs(model, epochs, round_index)`` retrains in place and returns its history; ``evaluate_val(model)`` /
    ``evaluate_test(model)`` give metrics; ``reference_val`` are the original's validation metrics."""
    base_macs, base_params = count_macs_params(model, example)
    rounds: list[PruneResult] = []
    speed: dict = {}
    history: list = []

    def prune_round(target: float) -> float:
        now = count_macs_params(model, example)[0] / base_macs
        fraction = max(0.0, 1.0 - (1.0 - target) / now)
        result, record = prune(model, fraction, rounds[0].widths if rounds else None)
        rounds.append(result)
        speed.update(record)
        return 1.0 - count_macs_params(model, example)[0] / base_macs

    targets = _targets(config)
    bound = config.stopping.max_group_drop
    if config.stopping.auto:
        extras = []  # (retrained copy, its test metrics before retraining, its loss history)

        def candidate(m):
            before, trained = evaluate_test(m), copy.deepcopy(m)
            extras.append((trained, before, fit_epochs(trained, config.retrain.epochs, 0)))
            return trained

        trajectory, chosen = auto_reduction(model, targets, prune_round=prune_round, candidate=candidate,
                                            score=evaluate_val, reference=reference_val, max_group_drop=bound)
        index = next(i for i, e in enumerate(extras) if e[0] is chosen)
        out_model, before, history = extras[index]
        kept = rounds[:index + 1]
    else:
        gradual = config.retrain_schedule == "gradual"
        step = [0]

        def adapt():
            history.extend(fit_epochs(model, 1, step[0]))
            step[0] += 1

        trajectory = guarded_prune(model, targets, prune_round=prune_round, score=lambda: evaluate_val(model),
                                   reference=reference_val, max_group_drop=bound, adapt=adapt if gradual else None,
                                   rule="max-group-drop" if bound is not None else "gradual schedule")
        before = evaluate_test(model) if gradual else None
        out_model = model
        history = history if gradual else None
        kept = [r for r, rec in zip(rounds, trajectory.rounds) if rec.kept]
    macs, params = count_macs_params(out_model, example)
    result = PruneResult(base_macs, macs, base_params, params, [s for r in kept for s in r.steps],
                         importance=rounds[-1].importance if rounds else {"name": config.prune.method},
                         widths=rounds[0].widths if rounds else {})
    record = trajectory.to_dict()
    record["schedule"] = config.retrain_schedule
    record["curve"] = [{"flops_reduction": r.reduction, "macs": int(round(base_macs * (1.0 - r.reduction))),
                        "worst_group": r.worst_group, "worst_group_accuracy": r.worst_group_accuracy,
                        "worst_drop": r.worst_drop, "kept": r.kept} for r in trajectory.rounds]
    return RoundsOutcome(out_model, result, speed, record, history, before)


def plot_curve(record: dict, path) -> None:
    """MACs vs validation worst-group accuracy across the tried reductions (the ``stopping`` record's curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fsutil import atomic_path

    curve = [c for c in record["curve"] if c["worst_group_accuracy"] is not None]
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    xs = [c["macs"] / 1e6 for c in curve]
    ax.plot(xs, [c["worst_group_accuracy"] for c in curve], "-", color="0.6")
    for c, x in zip(curve, xs):
        ax.plot(x, c["worst_group_accuracy"], "o" if c["kept"] else "x", color="tab:blue" if c["kept"] else "tab:red")
    ax.set_xlabel("MACs (millions)")
    ax.set_ylabel("validation worst-group accuracy (%)")
    bound = record.get("max_group_drop")
    what = "retrained copy" if record["rule"] == "flops-reduction auto" else "after each round"
    ax.set_title(f"{record['rule']}: bound {bound} points ({what}); o kept, x over the bound", fontsize=8)
    ax.invert_xaxis()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
