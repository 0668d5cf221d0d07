"""The bundle's device commands: ``verify BUNDLE_DIR`` (run by the trust anchor once it has checked the bundle),
``install``/``switch``/``rollback`` (argparse, exact flag names: no typer here)."""

from __future__ import annotations

import json
import sys

from . import EXIT_ERROR, EXIT_FAILED, EXIT_INTERNAL, EXIT_PASSED, RESULT_PREFIX
from ..errors import PwdeployError
from .args import Parser
from .install import main as install_main


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("install", "switch", "rollback"):
        return install_main(argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command != "verify":
        parser.print_help()
        return EXIT_ERROR
    return _verify(args)


def _parser() -> Parser:
    parser = Parser(prog="python3 -m pwdeploy.device", description="Check a pwdeploy bundle on this device.")
    sub = parser.add_subparsers(dest="command")
    verify = sub.add_parser("verify", help="check hashes, build the engine if needed, run the per-group gate")
    verify.add_argument("bundle_dir", help="folder of an unpacked bundle (e.g. DEPLOY_DIR/current)")
    verify.add_argument("--runner", default="auto", choices=("auto", "tensorrt", "onnxruntime"),
                        help="auto: TensorRT when installed, else ONNX Runtime (default)")
    verify.add_argument("--json", dest="json_path", default="",
                        help="where to write the result (default STATE_DIR/verify_result.json)")
    verify.add_argument("--state-dir", default=None,
                        help="where the engine, its build log and the result go (default "
                             "DEPLOY_DIR/.pwdeploy/state/<release>, or BUNDLE_DIR.pwdeploy-state)")
    verify.add_argument("--build-timeout", type=float, default=3600.0, help="seconds allowed for the engine build")
    verify.add_argument("--speed-seconds", type=float, default=None,
                        help="seconds for the latency timing, all batches together (0: not timed; default 20)")
    verify.add_argument("--result-line", action="store_true", help="end with a machine-readable result line")
    verify.add_argument("--allowed-signers", default=None,
                        help="OpenSSH allowed-signers file: refuse unsigned or wrongly signed bundles (default "
                             "DEPLOY_DIR/allowed_signers for a bundle under DEPLOY_DIR/releases/)")
    verify.add_argument("--debug", action="store_true", help="show tracebacks")
    sub.add_parser("install", help="install ARCHIVE into DEPLOY_DIR/releases and switch DEPLOY_DIR/current")
    sub.add_parser("switch", help="point DEPLOY_DIR/current at an installed release")
    sub.add_parser("rollback", help="switch DEPLOY_DIR/current to the previous verified release")
    return parser


def _verify(args) -> int:
    """The verify command: exit 0 passed, 1 gate failed, 2 unusable input, 3 a bug (one line unless --debug)."""
    try:
        from .verify import verify_bundle

        result = verify_bundle(args.bundle_dir, runner=args.runner, result_path=args.json_path,
                               build_timeout=args.build_timeout, allowed_signers=args.allowed_signers,
                               state_dir=args.state_dir, **({} if args.speed_seconds is None else
                                                            {"speed_seconds": args.speed_seconds}))
        passed = result["passed"]
    except PwdeployError as exc:
        if args.debug:
            raise
        print("error: {}".format(exc), file=sys.stderr)
        return EXIT_ERROR
    except ImportError as exc:  # numpy or a runtime missing on the device
        if args.debug:
            raise
        print("error: {}: install numpy and onnxruntime or TensorRT for python3 on this device "
              "(pip3 install numpy onnxruntime)".format(exc), file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: one line and its own code, the traceback only with --debug
        if args.debug:
            raise
        print("internal error: {}: {} (run again with --debug for the traceback)".format(
            type(exc).__name__, str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""), file=sys.stderr)
        return EXIT_INTERNAL
    if args.result_line:
        print(RESULT_PREFIX + json.dumps(result, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    return EXIT_PASSED if passed else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
