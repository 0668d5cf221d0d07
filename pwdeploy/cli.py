"""Command line: parse, call the Python API, print. Errors: one line, exit 2; failed gates exit 1."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from . import __version__
from .cli_fleet import register as register_device_commands
from .cli_panels import BY_NAME as COMPRESS_FLAGS, parse_data_options, split_values, with_flags_signature
from .errors import EXIT_INTERNAL, GateFailed, PwdeployError
from .models import list_models
from .registry import IMPORTANCES, LOSSES
from .rundir import RunDir
from .targets import DEFAULT_CALIB_SIZE, help_text as targets_help
from .validate import COUNT, check

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


# --- options shared with compress: declared once (pwdeploy.config settings, cli_panels.CLI_FLAGS) ---
def _shared(name: str):
    return COMPRESS_FLAGS[name].option(panel=False)  # a copy without compress's help panel


TargetHelp = targets_help()  # the targets registry (pwdeploy.targets) is the one list
ProtectHelp, MaxFloatHelp = COMPRESS_FLAGS["protect_groups"].option().help, COMPRESS_FLAGS["max_float_layers"].option().help
DataOpt, RootOpt, DataOptionOpt = _shared("data"), _shared("data_root"), _shared("data_option")
TargetAttrOpt, GroupAttrOpt, SkipBadOpt = _shared("target_attr"), _shared("group_attr"), _shared("skip_bad_images")
SeedOpt, DeviceOpt, ConfigOpt = _shared("seed"), _shared("device"), _shared("config")
NprocOpt, PrecisionOpt, ImageCacheOpt = _shared("nproc"), _shared("precision"), _shared("image_cache")
CacheDirOpt, WorkersOpt = _shared("cache_dir"), _shared("workers")


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


@app.command()
@with_flags_signature([inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Path,
                                         default=typer.Argument(..., help="model.pt: pwdeploy checkpoint, or state "
                                                                "dict with --arch/--num-classes."))])
def compress(model: Path, **options):
    """Prune with the PW loss to a FLOPs target, remove channels, retrain, export and report per group.

    Defaults shown are the built-in ones; configs/<data>.yaml (or --config) may set others, and flags override both.
    """
    from .api import compress_model

    overrides, own = split_values(options)
    _launch_or_run(own["nproc"], overrides["device"], lambda: compress_model(
        model, overrides, out=own["out"], config_file=own["config"], trust_pickle=own["trust_pickle"],
        overwrite=own["overwrite"], pw_gamma=own["pw_gamma"], pw_min_weight=own["pw_min_weight"]))


@app.command()
def plugins():
    """List the registered importance criteria and losses (built-in and plug-ins) with what each does."""
    from .progress import console

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
    calib_size: Optional[int] = typer.Option(None, "--calib-size", help=f"INT8: calibration images, stratified by group (default: the target's, {DEFAULT_CALIB_SIZE})."),
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


    check("--calib-size", calib_size, COUNT)

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


def _data_overrides(name: Optional[str], root: Optional[str], options: Optional[list[str]], *,
                    target_attr: Optional[str] = None, group_attr: Optional[str] = None,
                    skip_bad_images: bool = False) -> dict:
    parsed = parse_data_options(options, {}) or {}
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
