"""Command line: parse, call the Python API, print. Errors: one line, exit 2; failed gates exit 1."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .data import list_datasets
from .cli_fleet import register as register_device_commands
from .cli_panels import COMPRESS as COMPRESS_PANELS, panels
from .errors import EXIT_INTERNAL, ConfigError, PwdeployError
from .models import list_models
from .targets import DEFAULT_CALIB_SIZE, help_text as targets_help
from .registry import list_importances, list_losses

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fairness-preserving structured pruning (PW loss) and edge deployment.")
_state = {"debug": False, "argv": []}


def _version(value: bool):
    if value:
        typer.echo(f"pwdeploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
):
    _state["debug"] = debug


# --- INT8 group protection options, shared by compress and export ---
ProtectHelp = ("INT8: keep the layers whose quantization hurts the worst group in float, greedily, until every "
               "group is within the INT8 tolerance of fp32 on the validation split (or the budget is reached).")
def _max_float_help() -> str:
    from pwdeploy.calibration.protect import DEFAULT_MAX_FLOAT_LAYERS

    return f"INT8 with --protect-groups: at most this many layers kept in float (default {DEFAULT_MAX_FLOAT_LAYERS})."


MaxFloatHelp = _max_float_help()


# --- commands: train / compress / demo ---
TargetHelp = targets_help()  # the targets registry (pwdeploy.targets) is the one list
DataOpt = typer.Option(None, "--data", help=f"Dataset: {', '.join(list_datasets())}; "
                                            "default: the --config file's dataset, else synthetic.")
RootOpt = typer.Option(None, "--data-root", help="Folder holding the dataset files (or its parent).")
SeedOpt = typer.Option(0, "--seed", help="Seed for data order, sampling and initialisation.")
DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA where present), cpu, cuda or cuda:N.")
ConfigOpt = typer.Option(None, "--config", help="YAML config; default configs/<data>.yaml. Flags override it.")
DataOptionOpt = typer.Option(None, "--data-option", "-D",
                             help="Dataset option KEY=VALUE, repeatable (e.g. target_attr=Smiling).")
TargetAttrOpt = typer.Option(None, "--target-attr", help="CelebA: attribute to predict (default Blond_Hair).")
GroupAttrOpt = typer.Option(None, "--group-attr", help="CelebA: attribute that defines the groups (default Male).")
SkipBadOpt = typer.Option(False, "--skip-bad-images",
                          help="Count, report and skip missing or unreadable image files instead of failing.")
# --- scale options: torchrun, mixed precision, data pipeline ---
NprocOpt = typer.Option(None, "--nproc", help="Run in N processes on this machine through torchrun (DDP: gloo on "
                                              "CPU, nccl on CUDA, one GPU each). Several machines: run torchrun "
                                              "yourself (docs: Several GPUs or machines).")
PrecisionOpt = typer.Option(None, "--precision", help="Training precision: auto (bf16 on GPUs that have it, else "
                                                      "fp16; fp32 on the CPU), bf16, fp16 or fp32.")
ImageCacheOpt = typer.Option(None, "--image-cache", help="Decoded-image cache for image-file datasets: auto (when "
                                                         "the disk has room), on, off, rebuild (replace a stale one).")
CacheDirOpt = typer.Option(None, "--cache-dir", help="Where decoded images are cached (default $PWDEPLOY_IMAGE_CACHE_DIR "
                                                     "or ~/.cache/pwdeploy/images).")
WorkersOpt = typer.Option(None, "--workers", help="DataLoader worker processes per process (default: auto, 0 for "
                                                  "in-memory datasets).")


def _scale_overrides(overrides: dict, precision, image_cache, cache_dir, workers) -> None:
    if precision is not None:
        overrides["precision"] = precision
    for key, value in (("image_cache", image_cache), ("cache_dir", cache_dir), ("workers", workers)):
        _put(overrides, "loader", key, value)


def _launch_or_run(nproc: Optional[int], device: str, call) -> None:
    """``--nproc N``: start N processes of this very command through torchrun; else run it here (joining the
    torchrun job when this process is one of its ranks)."""
    from . import distributed

    if nproc is not None:
        distributed.launch(nproc, _state["argv"])
        return
    with distributed.session(device):
        call()


@app.command()
def train(
    out: Path = typer.Option(..., "--out", help="Where to write the trained checkpoint (model.pt)."),
    data: Optional[str] = DataOpt,
    data_root: Optional[str] = RootOpt,
    data_option: Optional[list[str]] = DataOptionOpt,
    target_attr: Optional[str] = TargetAttrOpt,
    group_attr: Optional[str] = GroupAttrOpt,
    skip_bad_images: bool = SkipBadOpt,
    arch: Optional[str] = typer.Option(None, "--arch", help=f"Architecture: {', '.join(list_models())}."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Output width; default the dataset's classes (1 = binary logit)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch size."),
    config: Optional[Path] = ConfigOpt,
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    nproc: Optional[int] = NprocOpt,
    precision: Optional[str] = PrecisionOpt,
    image_cache: Optional[str] = ImageCacheOpt,
    cache_dir: Optional[str] = CacheDirOpt,
    workers: Optional[int] = WorkersOpt,
):
    """Train a baseline model on a dataset (no pretrained weights can be downloaded)."""
    from .api import train_baseline

    overrides = _data_overrides(data, data_root, data_option, target_attr=target_attr, group_attr=group_attr,
                                skip_bad_images=skip_bad_images)
    _put(overrides, "model", "arch", arch)
    _put(overrides, "model", "num_classes", num_classes)
    for key, value in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size)):
        _put(overrides, "baseline", key, value)
    overrides.update(seed=seed, device=device)
    _scale_overrides(overrides, precision, image_cache, cache_dir, workers)
    _launch_or_run(nproc, device, lambda: train_baseline(overrides, out=out, config_file=config))


_COMPRESS_SECTIONED = (("model", "arch", "arch"), ("model", "num_classes", "num_classes"),
                      ("prune", "method", "method"), ("prune", "flops_reduction", "flops_reduction"),
                      ("prune", "round_to", "round_to"), ("prune", "allocation", "allocation"),
                      ("prune", "prune_budget", "prune_budget"),
                      ("prune", "latency_batch", "latency_batch"), ("prune", "latency_reduction", "latency_reduction"),
                      ("prune", "target_latency_ms", "target_latency_ms"), ("retrain", "epochs", "epochs"),
                      ("retrain", "lr", "lr"), ("kd", "temperature", "kd_temperature"), ("kd", "alpha", "kd_alpha"),
                      ("kd", "pw_weights", "kd_pw_weights"), ("clusters", "k", "clusters"),
                      ("gdro", "step_size", "gdro_step_size"), ("gdro", "adjustment", "gdro_adjustment"),
                      ("gdro", "base", "gdro_base"), ("stopping", "max_group_drop", "max_group_drop"))
_COMPRESS_TOP = ("pseudo_groups", "retrain_schedule", "select", "loss", "target", "group_balanced", "group_balance_strength",
                 "calib_size", "calib_method", "protect_groups", "max_float_layers")


def _compress_flags(overrides: dict, flags: dict) -> None:
    """compress's flags that were given (not None) into ``overrides`` under their config keys."""
    flags = dict(flags)
    if isinstance(flags["flops_reduction"], str):  # --flops-reduction auto | a fraction
        flags["flops_reduction"] = _flops_reduction(flags["flops_reduction"], overrides)
    for section, key, flag in _COMPRESS_SECTIONED:
        _put(overrides, section, key, flags[flag])
    if flags["recipes"] is not None:
        overrides["recipes"] = [r.strip() for r in flags["recipes"].split(",") if r.strip()]
    for key in _COMPRESS_TOP:
        if flags[key] is not None:
            overrides[key] = flags[key]


def _flops_reduction(text: str, overrides: dict):
    """``auto`` (the stopping rule picks it: pwdeploy.trajectory) or a fraction of the MACs to remove."""
    if text.strip().lower() == "auto":
        _put(overrides, "stopping", "auto", True)
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--flops-reduction {text!r}: give a fraction such as 0.75, or auto (with "
                          "--max-group-drop)") from None


@app.command()
@panels(COMPRESS_PANELS)
def compress(
    model: Path = typer.Argument(..., help="model.pt: pwdeploy checkpoint, or state dict with --arch/--num-classes."),
    out: Path = typer.Option(..., "--out", help="Run directory to create (runs/NAME)."),
    data: Optional[str] = DataOpt,
    data_root: Optional[str] = RootOpt,
    data_option: Optional[list[str]] = DataOptionOpt,
    target_attr: Optional[str] = TargetAttrOpt,
    group_attr: Optional[str] = GroupAttrOpt,
    skip_bad_images: bool = SkipBadOpt,
    method: Optional[str] = typer.Option(None, "--method", help="Importance criterion: " + ", ".join(list_importances())
                                         + " (fairgrape: channel-level adaptation of FairGRAPE, needs training group "
                                           "labels). `pwdeploy plugins` describes each."),
    loss: Optional[str] = typer.Option(None, "--loss", help="Loss: " + ", ".join(list_losses()) + " (pw: the paper's, "
                                       "default; ce: baseline; kd: distillation from the original, label-free; "
                                       "gdro: group DRO of Sagawa et al. 2020 over the training groups, label-free "
                                       "with --pseudo-groups)."),
    gdro_step_size: Optional[float] = typer.Option(None, "--gdro-step-size", help="--loss gdro: step size of the "
                                                   "exponentiated group weights (0.01, the paper's)."),
    gdro_adjustment: Optional[float] = typer.Option(None, "--gdro-adjustment", help="--loss gdro: group-size "
                                                    "adjustment C (each group's loss + C/sqrt(n_g) in the update; 0)."),
    gdro_base: Optional[str] = typer.Option(None, "--gdro-base", help="--loss gdro: per-sample loss, ce (the "
                                            "paper's) or kd (distillation from the original: extension)."),
    clusters: Optional[int] = typer.Option(None, "--clusters", help="--pseudo-groups clusters: clusters per class "
                                           "(default: chosen by silhouette among 1..4)."),
    flops_reduction: Optional[str] = typer.Option(None, "--flops-reduction", help="Fraction of MACs to remove, e.g. "
                                                  "0.75; auto (extension, with --max-group-drop): the largest of "
                                                  "0.5/0.75/0.85/0.9/0.95 whose retrained model keeps every "
                                                  "validation group within the bound."),
    max_group_drop: Optional[float] = typer.Option(None, "--max-group-drop", help="Extension: prune in rounds and "
                                                   "undo (and stop at) the first round that takes any validation "
                                                   "group more than D points below the original (real groups, or "
                                                   "--pseudo-groups where validation has none)."),
    retrain_schedule: Optional[str] = typer.Option(None, "--retrain-schedule", help="end (default: all epochs after "
                                                   "pruning) or gradual (extension: one pruning round per epoch, each "
                                                   "followed by that epoch; equal total epochs)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Retraining epochs after pruning."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Retraining learning rate."),
    pw_gamma: Optional[float] = typer.Option(None, "--pw-gamma", help="PW exponent gamma (overrides the config)."),
    pw_min_weight: Optional[float] = typer.Option(None, "--pw-min-weight", help="PW minimum weight w_min."),
    group_balanced: Optional[bool] = typer.Option(None, "--group-balanced/--no-group-balanced",
                                                  help="Extension, not the paper: equal total PW weight per group "
                                                       "(needs group labels; default from the dataset config: on for "
                                                       "synthetic and celeba, the recipe the benchmark supports)."),
    group_balance_strength: Optional[float] = typer.Option(
        None, "--group-balance-strength", help="With --group-balanced: 1 equal group totals, 0.5 halfway (in log "
                                               "scale), any value in (0, 1]."),
    kd_temperature: Optional[float] = typer.Option(None, "--kd-temperature", help="--loss kd: temperature T (4)."),
    kd_alpha: Optional[float] = typer.Option(None, "--kd-alpha", help="--loss kd: weight of the distillation term "
                                                                      "against CE on the labels (0.9)."),
    kd_pw_weights: Optional[bool] = typer.Option(None, "--kd-pw-weights/--no-kd-pw-weights",
                                                 help="--loss kd: weight each sample by its PW weight."),
    pseudo_groups: Optional[str] = typer.Option(None, "--pseudo-groups",
                                                help="Extension, label-free: clusters (k-means of the original's "
                                                     "penultimate features per class) or error-set (true label x "
                                                     "original right/wrong) replace the dataset's groups for group "
                                                     "balance, FairGRAPE, gdro and validation checks; none (default)."),
    select: Optional[str] = typer.Option(None, "--select", help="Checkpoint shipped: last (default) or worst-group "
                                                                "(best validation worst-group accuracy; needs "
                                                                "validation group labels)."),
    recipes: Optional[str] = typer.Option(None, "--recipes", help="Compare recipes at the same MACs target and ship "
                                                                  "the best on validation, e.g. ce,pw,pw+gb,kd,"
                                                                  "pw+pseudo,fairgrape (needs validation group labels)."),
    target: Optional[str] = typer.Option(None, "--target", help=TargetHelp),
    calib_size: Optional[int] = typer.Option(None, "--calib-size", help=f"INT8: calibration images, stratified by group (default {DEFAULT_CALIB_SIZE})."),
    calib_method: Optional[str] = typer.Option(None, "--calib-method", help="INT8: minmax, entropy or percentile."),
    protect_groups: Optional[bool] = typer.Option(None, "--protect-groups", help=ProtectHelp),
    max_float_layers: Optional[int] = typer.Option(None, "--max-float-layers", help=MaxFloatHelp),
    round_to: Optional[int] = typer.Option(None, "--round-to", help="Kept channels a multiple of N in every pruned "
                                           "group (default per --target: 16 ONNX/INT8, 8 TensorRT fp16; 1: off)."),
    allocation: Optional[str] = typer.Option(None, "--allocation", help="auto (default: uniform for Taylor on "
                                             "onnx-fp32, global otherwise), global (one importance ranking), uniform (every layer "
                                             "loses the same share) or latency (ranking weighted by each layer's "
                                             "measured latency saving)."),
    prune_budget: Optional[float] = typer.Option(None, "--prune-budget", help="Pruning reads at most about this many "
                                                 "retraining epochs' worth of training samples (default 12; fewer "
                                                 "steps and batches on a small dataset); 0: the fixed schedule."),
    latency_reduction: Optional[float] = typer.Option(None, "--latency-reduction", help="Prune until the measured "
                                                      "latency (ONNX Runtime CPU) falls by this fraction."),
    target_latency_ms: Optional[float] = typer.Option(None, "--target-latency-ms",
                                                      help="Prune until the measured latency is this many ms."),
    latency_batch: Optional[int] = typer.Option(None, "--latency-batch", help="Batch size the latency is for (1)."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Architecture of a state-dict MODEL."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Class count of a state-dict MODEL."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow MODEL to be a pickled nn.Module."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory."),
    config: Optional[Path] = ConfigOpt,
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    nproc: Optional[int] = NprocOpt,
    precision: Optional[str] = PrecisionOpt,
    image_cache: Optional[str] = ImageCacheOpt,
    cache_dir: Optional[str] = CacheDirOpt,
    workers: Optional[int] = WorkersOpt,
):
    """Prune with the PW loss to a FLOPs target, remove channels, retrain, export and report per group."""
    from .api import compress_model

    overrides = _data_overrides(data, data_root, data_option, target_attr=target_attr, group_attr=group_attr,
                                skip_bad_images=skip_bad_images)
    _compress_flags(overrides, locals())
    overrides.update(seed=seed, device=device)
    _scale_overrides(overrides, precision, image_cache, cache_dir, workers)
    _launch_or_run(nproc, device, lambda: compress_model(model, overrides, out=out, config_file=config,
                                                         trust_pickle=trust_pickle, overwrite=overwrite,
                                                         pw_gamma=pw_gamma, pw_min_weight=pw_min_weight))


@app.command()
def plugins():
    """List the registered importance criteria and losses (built-in and plug-ins) with what each does."""
    from rich.table import Table

    from .progress import console
    from .registry import IMPORTANCES, LOSSES

    for title, registry in (("importance criteria (--method)", IMPORTANCES), ("losses (--loss)", LOSSES)):
        table = Table(title=title)
        table.add_column("name")
        table.add_column("what it does")
        for name, text in registry.describe().items():
            table.add_row(name, text)
        console.print(table)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the demo's runs."),
    seed: int = SeedOpt,
    device: str = DeviceOpt,
):
    """The main job on the built-in synthetic data: train, compress with PW and CE at 75%, compare."""
    from .demo import run_demo

    run_demo(out, seed=seed, device=device)


# --- commands: export / verify ---
AllowEmptyOpt = typer.Option(False, "--allow-empty-groups",
                             help="Let a group with no verification samples pass (default: it FAILS, since "
                                  "nothing shows it is unharmed).")


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="Run directory written by 'pwdeploy compress'."),
    target: str = typer.Option(..., "--target", help=TargetHelp),
    calib_size: int = typer.Option(DEFAULT_CALIB_SIZE, "--calib-size", help="INT8: calibration images, stratified by group."),
    calib_method: str = typer.Option("minmax", "--calib-method", help="INT8: minmax, entropy or percentile."),
    recalibrate: bool = typer.Option(False, "--recalibrate",
                                     help="INT8: compute new scales even if a calibration is recorded."),
    int8_full_range: bool = typer.Option(False, "--int8-full-range",
                                         help="INT8: 8-bit weights (TensorRT only; x86 CPUs without VNNI saturate)."),
    protect_groups: bool = typer.Option(False, "--protect-groups", help=ProtectHelp),
    max_float_layers: Optional[int] = typer.Option(None, "--max-float-layers", help=MaxFloatHelp),
    seed: int = SeedOpt,
):
    """Make a precision target (fp16 / INT8 Q/DQ ONNX, TensorRT engine or its build script) for an existing run."""
    from pwdeploy.exporters.targets import export_target

    from .rundir import RunDir
    from .validate import COUNT, check

    check("--calib-size", calib_size, COUNT, allow_none=False)

    export_target(RunDir.open(run_dir).path, target, calib_size=calib_size, calib_method=calib_method, seed=seed,
                  recalibrate=recalibrate, int8_full_range=int8_full_range, protect_groups=protect_groups,
                  max_float_layers=max_float_layers)


# --- commands: analyze ---
@app.command()
def analyze(
    run_dir: Path = typer.Argument(..., help="Run directory with an INT8 export ('pwdeploy export RUN --target "
                                             "onnx-int8')."),
    int8: bool = typer.Option(False, "--int8", help="Per-group INT8 sensitivity: each weighted layer left in float "
                                                   "in turn, every group's accuracy on the validation split."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help="Points a group may lose against fp32 "
                                                                         "(default: the INT8 gate's 2.0)."),
    max_samples: int = typer.Option(2000, "--max-samples", help="Validation images used (a group-stratified subset "
                                                                 "above this)."),
    ort_provider: str = typer.Option("cpu", "--ort-provider", help="ONNX Runtime: cpu or cuda."),
):
    """Which layers' quantization costs which group: a table, int8_sensitivity.png and report.json."""
    from pwdeploy.exporters.int8_analysis import analyze_int8

    if not int8:
        raise PwdeployError("say what to analyze: 'pwdeploy analyze RUN --int8' (per-group INT8 sensitivity)")
    if max_samples < 1:
        raise PwdeployError(f"--max-samples must be >= 1, got {max_samples}")
    if tolerance is not None and tolerance < 0:
        raise PwdeployError(f"--tolerance must be >= 0, got {tolerance}")
    analyze_int8(run_dir, tolerance=tolerance, max_samples=max_samples, provider=ort_provider)


@app.command("verify")
def verify_command(
    artifact: Path = typer.Argument(..., help="Run directory, .onnx, .plan/.engine (or .pt) to verify."),
    reference: Optional[Path] = typer.Option(None, "--reference",
                                             help="Run directory a bare artifact was exported from."),
    target: Optional[str] = typer.Option(None, "--target", help="Of a run directory, verify only this: " + TargetHelp),
    data: Optional[str] = typer.Option(None, "--data", help="Evaluate this dataset's test split (needs torch); "
                                                             "default: the run's verification_set.npz."),
    data_root: Optional[str] = RootOpt,
    data_option: Optional[list[str]] = DataOptionOpt,
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help="Points a group may lose against the "
                                                                         "reference (default 1.0 fp32/fp16, 2.0 int8)."),
    max_group_drop: Optional[float] = typer.Option(None, "--max-group-drop",
                                                   help="Also fail a group more than D points below the original."),
    runner: str = typer.Option("auto", "--runner", help="auto, onnxruntime, tensorrt or torch."),
    ort_provider: str = typer.Option("auto", "--ort-provider", help="ONNX Runtime: auto, cpu, cuda or tensorrt."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for per-group CIs (0: off)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Inference batch size."),
    seed: int = SeedOpt,
    allow_empty_groups: bool = AllowEmptyOpt,
    force: bool = typer.Option(False, "--force", help="With --reference: verify an artifact whose recorded model "
                                                      "hash says it was exported from another run."),
    speed_seconds: float = typer.Option(0.0, "--speed-seconds", help="Also time each ONNX artifact (and the "
                                                                     "original) with the device's code, S seconds."),
):
    """Run the exported artifact per group; PASSED/FAILED per group, verify.json; exit 1 when the gate fails."""
    from .errors import GateFailed
    from .verify import verify as run_verify

    options = _data_overrides(data or "", None, data_option)["data"].get("options")
    summary = run_verify(artifact, reference=reference, target=target, data=data, data_root=data_root, data_options=options,
               tolerance=tolerance, max_group_drop=max_group_drop, runner=runner, ort_provider=ort_provider,
               bootstrap=bootstrap, seed=seed, batch_size=batch_size, allow_empty_groups=allow_empty_groups,
               force=force, speed_seconds=speed_seconds)
    if summary["failure"]:
        raise GateFailed(summary["failure"])


# --- commands: package / ship ---
@app.command()
def package(
    run_dir: Path = typer.Argument(..., help="Run directory written by 'pwdeploy compress' (and 'pwdeploy export')."),
    output: Path = typer.Option(..., "-o", "--output", help="Bundle to write: NAME.tar.gz."),
    target: Optional[str] = typer.Option(None, "--target", help="Default: the run's target. " + TargetHelp),
    verification_size: int = typer.Option(300, "--verification-size",
                                          help="Test images shipped for the on-device gate (equal shares per group)."),
    engine_for: Optional[str] = typer.Option(None, "--engine-for",
                                             help="Also ship the run's TensorRT engine if it was built on this GPU "
                                                  "(e.g. Orin); default: the device builds its own."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help="Points a group may lose on the device "
                                                                         "(default 1.0 fp32/fp16, 2.0 int8)."),
    max_group_drop: Optional[float] = typer.Option(None, "--max-group-drop",
                                                   help="Also fail a group more than D points below the original."),
    seed: int = SeedOpt,
    sign_key: Optional[str] = typer.Option(None, "--sign-key", help="SSH private key (e.g. ~/.ssh/id_ed25519) to "
                                                                    "sign manifest.json with (ssh-keygen -Y sign)."),
    allow_empty_groups: bool = AllowEmptyOpt,
    release: Optional[int] = typer.Option(None, "--release", help="Release number of this bundle for its model "
                                                                  "(signed; devices refuse older ones). Default: the "
                                                                  "packaging time as YYYYMMDDHHMMSS."),
    with_original: bool = typer.Option(False, "--with-original", help="Also ship original.onnx: the device times "
                                                                      "both and reports the realized speed-up."),
    max_latency_ms: Optional[list[str]] = typer.Option(None, "--max-latency-ms", metavar="MS[@BATCH]",
                                                       help="Latency budget (median, batch 1 unless @BATCH) the "
                                                            "device verify fails above; repeatable."),
    min_speedup: Optional[float] = typer.Option(None, "--min-speedup", help="Fail the device verify below this "
                                                                            "speed-up over the original (needs "
                                                                            "--with-original)."),
):
    """Bundle a run for a Jetson: model, verification set + reference results, build_engine.sh, device verifier."""
    from .package import package_run

    package_run(run_dir, output, target=target, verification_size=verification_size, seed=seed,
                engine_for=engine_for, tolerance=tolerance, max_group_drop=max_group_drop, sign_key=sign_key,
                allow_empty_groups=allow_empty_groups, release=release, with_original=with_original,
                max_latency_ms=max_latency_ms, min_speedup=min_speedup)


register_device_commands(app)  # ship (one host or a fleet), status, rollback: pwdeploy/cli_fleet.py


@app.command()
def anchor(
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the device trust anchor here "
                                                                       "(pwdeploy-device.py); without it, print its "
                                                                       "sha256 only."),
):
    """The device trust anchor (pwdeploy-device.py): write it for a hand install and print the sha256 to pin."""
    from .anchor import anchor_sha256, write_anchor

    digest = write_anchor(output) if output is not None else anchor_sha256()
    print(f"{digest}  {output if output is not None else 'pwdeploy-device.py'}")


def _put(d: dict, section: str, key: str, value) -> None:
    if value is not None:
        d.setdefault(section, {})[key] = value


def _data_overrides(name: Optional[str], root: Optional[str], options: Optional[list[str]], *, target_attr: Optional[str] = None,
                    group_attr: Optional[str] = None, skip_bad_images: bool = False) -> dict:
    import yaml

    parsed = {}
    for item in options or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PwdeployError(f"--data-option {item!r} must look like KEY=VALUE")
        parsed[key] = yaml.safe_load(value)
    # dedicated flags are data options too; only set ones are passed (other adapters reject unknown options)
    for key, value in (("target_attr", target_attr), ("group_attr", group_attr),
                       ("skip_bad_images", skip_bad_images or None)):
        if value is not None:
            parsed[key] = value
    data = {"name": name} if name else {}
    if root is not None:
        data["root"] = root
    if parsed:
        data["options"] = parsed
    return {"data": data}


def main(argv: Optional[list[str]] = None) -> int:
    _state["debug"] = False  # set again by --debug; a previous call in the same process must not leak it
    _state["argv"] = list(sys.argv[1:] if argv is None else argv)
    try:
        # typer turns Ctrl-C (and typer.Exit) into a returned exit code in non-standalone mode
        result = app(args=argv, standalone_mode=False)
        if isinstance(result, int) and result:
            if result == 130:
                typer.echo("interrupted: nothing was left half-written", err=True)
            return result
    except PwdeployError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo("interrupted: nothing was left half-written", err=True)
        return 130
    except typer.Abort:
        return 130
    except typer.TyperException as exc:  # usage errors (bad option, missing argument) in non-standalone mode
        exc.show()
        return 2
    except Exception as exc:  # a bug, not bad input: one line and its own code; --debug shows the traceback
        if _state["debug"]:
            raise
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        typer.echo(f"internal error: {type(exc).__name__}{': ' + detail if detail else ''} (run again with "
                   "--debug for the traceback and report it)", err=True)
        return EXIT_INTERNAL
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
