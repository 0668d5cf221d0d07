"""Command line: parse, call the Python API, print. Errors: one line, exit 2; failed gates exit 1."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .device.install import DEFAULT_KEEP
from .errors import PwdeployError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fairness-preserving structured pruning (PW loss) and edge deployment.")
_state = {"debug": False}


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


# --- commands: train / compress / demo (issue 2) ---
DataOpt = typer.Option(None, "--data", help="Dataset: synthetic (default), celeba, cifar10, fitzpatrick17k, csv; "
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


@app.command()
def train(
    out: Path = typer.Option(..., "--out", help="Where to write the trained checkpoint (model.pt)."),
    data: Optional[str] = DataOpt,
    data_root: Optional[str] = RootOpt,
    data_option: Optional[list[str]] = DataOptionOpt,
    target_attr: Optional[str] = TargetAttrOpt,
    group_attr: Optional[str] = GroupAttrOpt,
    skip_bad_images: bool = SkipBadOpt,
    arch: Optional[str] = typer.Option(None, "--arch", help="torchvision:NAME or smallcnn, tinyresnet, cifar_resnet56."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Output width; default the dataset's classes (1 = binary logit)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch size."),
    config: Optional[Path] = ConfigOpt,
    seed: int = SeedOpt,
    device: str = DeviceOpt,
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
    train_baseline(overrides, out=out, config_file=config)


@app.command()
def compress(
    model: Path = typer.Argument(..., help="model.pt: pwdeploy checkpoint, or state dict with --arch/--num-classes."),
    out: Path = typer.Option(..., "--out", help="Run directory to create (runs/NAME)."),
    data: Optional[str] = DataOpt,
    data_root: Optional[str] = RootOpt,
    data_option: Optional[list[str]] = DataOptionOpt,
    target_attr: Optional[str] = TargetAttrOpt,
    group_attr: Optional[str] = GroupAttrOpt,
    skip_bad_images: bool = SkipBadOpt,
    method: Optional[str] = typer.Option(None, "--method", help="Importance: taylor, autobot or magnitude."),
    loss: Optional[str] = typer.Option(None, "--loss", help="pw (performance weighted, default) or ce (baseline)."),
    flops_reduction: Optional[float] = typer.Option(None, "--flops-reduction", help="Fraction of MACs to remove, e.g. 0.75."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Retraining epochs after pruning."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Retraining learning rate."),
    pw_gamma: Optional[float] = typer.Option(None, "--pw-gamma", help="PW exponent gamma (overrides the config)."),
    pw_min_weight: Optional[float] = typer.Option(None, "--pw-min-weight", help="PW minimum weight w_min."),
    group_balanced: Optional[bool] = typer.Option(None, "--group-balanced/--no-group-balanced",
                                                  help="Extension, not the paper: equal total PW weight per group "
                                                       "(needs group labels; default from the dataset config, on for "
                                                       "synthetic)."),
    group_balance_strength: Optional[float] = typer.Option(
        None, "--group-balance-strength", help="With --group-balanced: 1 equal group totals, 0.5 halfway (in log "
                                               "scale), any value in (0, 1]."),
    target: Optional[str] = typer.Option(None, "--target", help="onnx-fp32, onnx-fp16, onnx-int8, trt-fp32, trt-fp16, trt-int8."),
    calib_size: Optional[int] = typer.Option(None, "--calib-size", help="INT8: calibration images, stratified by group (default 512)."),
    calib_method: Optional[str] = typer.Option(None, "--calib-method", help="INT8: minmax, entropy or percentile."),
    round_to: Optional[int] = typer.Option(None, "--round-to", help="Kept channels a multiple of N in every pruned "
                                           "group (default per --target: 16 ONNX/INT8, 8 TensorRT fp16; 1: off)."),
    allocation: Optional[str] = typer.Option(None, "--allocation", help="global (importance ranking) or latency "
                                             "(ranking weighted by each layer's measured latency saving)."),
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
):
    """Prune with the PW loss to a FLOPs target, remove channels, retrain, export and report per group."""
    from .api import compress_model

    overrides = _data_overrides(data, data_root, data_option, target_attr=target_attr, group_attr=group_attr,
                                skip_bad_images=skip_bad_images)
    _put(overrides, "model", "arch", arch)
    _put(overrides, "model", "num_classes", num_classes)
    _put(overrides, "prune", "method", method)
    _put(overrides, "prune", "flops_reduction", flops_reduction)
    for key, value in (("round_to", round_to), ("allocation", allocation), ("latency_batch", latency_batch),
                       ("latency_reduction", latency_reduction), ("target_latency_ms", target_latency_ms)):
        _put(overrides, "prune", key, value)
    _put(overrides, "retrain", "epochs", epochs)
    _put(overrides, "retrain", "lr", lr)
    for key, value in (("loss", loss), ("target", target), ("group_balanced", group_balanced),
                       ("group_balance_strength", group_balance_strength), ("calib_size", calib_size),
                       ("calib_method", calib_method)):
        if value is not None:
            overrides[key] = value
    overrides.update(seed=seed, device=device)
    compress_model(model, overrides, out=out, config_file=config, trust_pickle=trust_pickle,
                   overwrite=overwrite, pw_gamma=pw_gamma, pw_min_weight=pw_min_weight)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the demo's runs."),
    seed: int = SeedOpt,
    device: str = DeviceOpt,
):
    """The main job on the built-in synthetic data: train, compress with PW and CE at 75%, compare."""
    from .demo import run_demo

    run_demo(out, seed=seed, device=device)


# --- commands: export / verify (issue 3) ---
TargetHelp = "onnx-fp32, onnx-fp16, onnx-int8, trt-fp32, trt-fp16 or trt-int8."


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="Run directory written by 'pwdeploy compress'."),
    target: str = typer.Option(..., "--target", help=TargetHelp),
    calib_size: int = typer.Option(512, "--calib-size", help="INT8: calibration images, stratified by group."),
    calib_method: str = typer.Option("minmax", "--calib-method", help="INT8: minmax, entropy or percentile."),
    recalibrate: bool = typer.Option(False, "--recalibrate",
                                     help="INT8: compute new scales even if a calibration is recorded."),
    int8_full_range: bool = typer.Option(False, "--int8-full-range",
                                         help="INT8: 8-bit weights (TensorRT only; x86 CPUs without VNNI saturate)."),
    seed: int = SeedOpt,
):
    """Make a precision target (fp16 / INT8 Q/DQ ONNX, TensorRT engine or its build script) for an existing run."""
    from exporters.targets import export_target

    from .rundir import RunDir

    export_target(RunDir.open(run_dir).path, target, calib_size=calib_size, calib_method=calib_method, seed=seed,
                  recalibrate=recalibrate, int8_full_range=int8_full_range)


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
):
    """Run the exported artifact per group; PASSED/FAILED per group, verify.json; exit 1 when the gate fails."""
    from .verify import verify as run_verify

    options = _data_overrides(data or "", None, data_option)["data"].get("options")
    run_verify(artifact, reference=reference, target=target, data=data, data_root=data_root, data_options=options,
               tolerance=tolerance, max_group_drop=max_group_drop, runner=runner, ort_provider=ort_provider,
               bootstrap=bootstrap, seed=seed, batch_size=batch_size)


# --- commands: package / ship (issue 5) ---
@app.command()
def package(
    run_dir: Path = typer.Argument(..., help="Run directory written by 'pwdeploy compress' (and 'pwdeploy export')."),
    output: Path = typer.Option(..., "-o", "--output", help="Bundle to write: NAME.tar.gz."),
    target: Optional[str] = typer.Option(None, "--target", help="Default: the run's target. onnx-fp32, onnx-fp16, "
                                                                 "onnx-int8, trt-fp32, trt-fp16 or trt-int8."),
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
):
    """Bundle a run for a Jetson: model, verification set + reference results, build_engine.sh, device verifier."""
    from .package import package_run

    package_run(run_dir, output, target=target, verification_size=verification_size, seed=seed,
                engine_for=engine_for, tolerance=tolerance, max_group_drop=max_group_drop)


@app.command()
def ship(
    bundle: Path = typer.Argument(..., help="Bundle written by 'pwdeploy package' (NAME.tar.gz)."),
    destination: str = typer.Argument(..., help="user@host:DIR on the device (DIR/current will point at it)."),
    verify: bool = typer.Option(False, "--verify", help="Run the device-side verify in the new release first; switch "
                                                        "`current` only if it passes; bring back its result."),
    port: Optional[int] = typer.Option(None, "-p", "--port", help="SSH port."),
    identity: Optional[str] = typer.Option(None, "-i", "--identity", help="SSH private key file."),
    ssh_config: Optional[str] = typer.Option(None, "-F", "--ssh-config", help="ssh config file (default ~/.ssh/config)."),
    ssh_option: Optional[list[str]] = typer.Option(None, "-o", "--ssh-option",
                                                   help="Extra ssh option, repeatable (e.g. -o ProxyJump=gw)."),
    remote_python: str = typer.Option("python3", "--remote-python", help="Python 3.8+ on the device (path or name)."),
    runner: str = typer.Option("auto", "--runner", help="Device verify runtime: auto, tensorrt or onnxruntime."),
    verify_timeout: float = typer.Option(3600.0, "--verify-timeout", help="Seconds allowed for the remote verify "
                                                                          "(includes the engine build)."),
    keep: int = typer.Option(DEFAULT_KEEP, "--keep", help="Releases kept on the device after switching, `current` "
                                                         "included (older ones are removed; 0 keeps all)."),
):
    """Copy a bundle over SSH, install it as DIR/current only if its hashes check out, optionally verify it there."""
    from .errors import GateFailed
    from .ship import ship as ship_bundle

    result = ship_bundle(bundle, destination, verify=verify, port=port, identity=identity, ssh_config=ssh_config,
                         ssh_options=ssh_option, remote_python=remote_python, runner=runner,
                         verify_timeout=verify_timeout, keep=keep)
    if result.passed is False:
        failed = ", ".join(result.verify.get("gate", {}).get("failed_groups", [])) or "integrity"
        kept = f"still points at {result.previous}" if result.previous else "was not created"
        raise GateFailed(f"device verify FAILED on {result.destination} ({failed}); see {result.verify_path}; "
                         f"`current` {kept}")



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
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
