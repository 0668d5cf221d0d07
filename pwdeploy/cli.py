"""Command line: parse, call the Python API, print. Errors: one line, exit 2; failed gates exit 1."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from . import __version__
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
DataOpt = typer.Option("synthetic", "--data", help="Dataset: synthetic, celeba, cifar10, fitzpatrick17k, csv.")
RootOpt = typer.Option(None, "--data-root", help="Folder holding the dataset files (or its parent).")
SeedOpt = typer.Option(0, "--seed", help="Seed for data order, sampling and initialisation.")
DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA where present), cpu, cuda or cuda:N.")
ConfigOpt = typer.Option(None, "--config", help="YAML config; default configs/<data>.yaml. Flags override it.")
DataOptionOpt = typer.Option(None, "--data-option", "-D",
                             help="Dataset option KEY=VALUE, repeatable (e.g. target_attr=Smiling).")


@app.command()
def train(
    out: Path = typer.Option(..., "--out", help="Where to write the trained checkpoint (model.pt)."),
    data: str = DataOpt,
    data_root: Optional[str] = RootOpt,
    data_option: Optional[list[str]] = DataOptionOpt,
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

    overrides = _data_overrides(data, data_root, data_option)
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
    data: str = DataOpt,
    data_root: Optional[str] = RootOpt,
    data_option: Optional[list[str]] = DataOptionOpt,
    method: Optional[str] = typer.Option(None, "--method", help="Importance: taylor, autobot or magnitude."),
    loss: Optional[str] = typer.Option(None, "--loss", help="pw (performance weighted, default) or ce (baseline)."),
    flops_reduction: Optional[float] = typer.Option(None, "--flops-reduction", help="Fraction of MACs to remove, e.g. 0.75."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Retraining epochs after pruning."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Retraining learning rate."),
    pw_gamma: Optional[float] = typer.Option(None, "--pw-gamma", help="PW exponent gamma (overrides the config)."),
    pw_min_weight: Optional[float] = typer.Option(None, "--pw-min-weight", help="PW minimum weight w_min."),
    group_balanced: Optional[bool] = typer.Option(None, "--group-balanced/--no-group-balanced",
                                                  help="Extension, not the paper: equal total PW weight per group."),
    target: Optional[str] = typer.Option(None, "--target", help="onnx-fp32, onnx-fp16, onnx-int8, trt-fp32, trt-fp16, trt-int8."),
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

    overrides = _data_overrides(data, data_root, data_option)
    _put(overrides, "model", "arch", arch)
    _put(overrides, "model", "num_classes", num_classes)
    _put(overrides, "prune", "method", method)
    _put(overrides, "prune", "flops_reduction", flops_reduction)
    _put(overrides, "retrain", "epochs", epochs)
    _put(overrides, "retrain", "lr", lr)
    for key, value in (("loss", loss), ("target", target), ("group_balanced", group_balanced)):
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

# --- commands: package / ship (issue 5) ---


def _put(d: dict, section: str, key: str, value) -> None:
    if value is not None:
        d.setdefault(section, {})[key] = value


def _data_overrides(name: str, root: Optional[str], options: Optional[list[str]]) -> dict:
    import yaml

    parsed = {}
    for item in options or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PwdeployError(f"--data-option {item!r} must look like KEY=VALUE")
        parsed[key] = yaml.safe_load(value)
    data = {"name": name}
    if root is not None:
        data["root"] = root
    if parsed:
        data["options"] = parsed
    return {"data": data}


def main(argv: Optional[list[str]] = None) -> int:
    try:
        app(args=argv, standalone_mode=False)
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
    except Exception as exc:  # click usage errors come through here in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return 2
        if isinstance(exc, click.exceptions.Abort):
            return 130
        raise
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
