"""`python3 -m pwdeploy.device verify BUNDLE_DIR`: the bundle checks itself on the device.

1. validate manifest.json against its schema (nothing else is read before that);
2. check the sha256 of every file the manifest lists;
3. pick the runtime: TensorRT (engine built here when missing) or, without TensorRT, ONNX Runtime on the
   shipped ONNX, said out loud;
4. run the shipped verification set, compute per-group metrics and apply the same per-group gate as
   `pwdeploy verify` against the reference results recorded at packaging time;
5. print PASSED/FAILED per group, write verify_result.json into the state folder (never into the bundle: see
   device/state.py), exit 0 (passed) or 1 (failed).

numpy plus one runtime; Python 3.8 compatible; no torch.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from typing import Any, Callable, Dict, Optional

import numpy as np

from .. import __version__
from ..errors import DataError
from ..fsutil import sha256_bytes, write_json
from ..evaluate import agreement, evaluate_artifact
from ..manifest import check_files, parse_manifest, read_manifest, read_signature, unlisted_entries
from ..metrics import fmt_points, predict
from ..verification_set import load_verification_set
from ..latency_gate import table_lines
from ..signature import signers_for, verify as verify_signature
from . import facts as device_facts
from .runners import describe, run_batches, select_runner
from .speed import DEFAULT_SECONDS, summary_lines, timed_and_gated
from .state import state_dir as state_dir_of

RESULT_SCHEMA = "pwdeploy.device_verify/1"
RESULT_FILE = "verify_result.json"


def verify_bundle(bundle_dir: str, *, runner: str = "auto", log: Optional[Callable[[str], None]] = None,
                  result_path: Optional[str] = "", build_timeout: float = 3600.0,
                  allowed_signers: Optional[str] = None, state_dir: Optional[str] = None,
                  speed_seconds: float = DEFAULT_SECONDS) -> Dict[str, Any]:
    """Verify an unpacked bundle; returns the result (``result["passed"]``: the gate passed). ``result_path`` ''
    writes STATE_DIR/verify_result.json (device/state.py; an engine built here goes there too), None nothing;
    ``speed_seconds`` bounds the latency timing (0: not timed, so a latency budget FAILS). Unusable input (invalid
    manifest, missing runtime, a device lacking what the bundle needs, a bad signature) raises PwdeployError;
    a hash mismatch, an unlisted file or a failed gate is a result, not an error."""
    log = log or (lambda line: print(line, flush=True))
    bundle_dir = os.path.abspath(bundle_dir)
    state = state_dir_of(bundle_dir, state_dir)
    started = time.time()
    raw = read_manifest(bundle_dir)
    manifest = parse_manifest(raw, os.path.join(bundle_dir, "manifest.json"))
    signers = signers_for(bundle_dir, allowed_signers)
    signer = verify_signature(raw, read_signature(bundle_dir), signers, what=bundle_dir) if signers else None
    result = _new_result(manifest, signers, signer)
    log("pwdeploy device verify: bundle {} (target {}, packaged {})".format(
        manifest["bundle_id"], manifest["target"], manifest["created"]))
    if not _integrity(bundle_dir, manifest, result, log):
        _write(result, state, result_path)
        return result
    vs = load_verification_set(os.path.join(bundle_dir, manifest["verification"]["file"]))
    _check_set(vs, manifest)
    device_facts.refuse_if_lacking(manifest, result["device"], runner)
    model_runner, note = select_runner(bundle_dir, manifest, runner, log=log, build_timeout=build_timeout,
                                       state_dir=state, manifest_sha256=sha256_bytes(raw))
    try:
        t0 = time.time()
        logits = run_batches(model_runner, vs.images, batch_size=manifest["verification"]["batch_size"])
        seconds = time.time() - t0
    finally:
        model_runner.close()
    reference = manifest["reference"]
    shared = evaluate_artifact(logits, vs.labels, vs.groups, vs.group_names, reference["metrics"],
                               tolerance=float(manifest["gate"]["tolerance"]), original=reference.get("original"),
                               max_group_drop=manifest["gate"]["max_group_drop"],
                               allow_empty_groups=manifest["gate"].get("allow_empty_groups", False),
                               reference_logits=vs.logits.get("reference"))
    gate, metrics = shared.pop("gate_result"), shared["metrics"]
    speed, budgets = timed_and_gated(bundle_dir, manifest, vs.images, model_runner, speed_seconds, log)
    shared["passed"] = bool(shared["passed"] and all(b.passed for b in budgets))
    result.update({
        "runner": dict(describe(model_runner), note=note),
        "n": len(vs),
        "seconds": round(seconds, 3),
        "reference_runner": reference["runner"],
        **shared,
        # the shipped pruned PyTorch model too, where the bundle carries its logits
        "agreement": _agreement(predict(logits), vs),
        "speed": speed,
        "latency_gate": [b.to_dict() for b in budgets],
        "total_seconds": round(time.time() - started, 3),
    })
    for line in summary_lines(speed) if speed is not None else []:
        log(line)
    _print_table(log, metrics, gate, result["agreement"], len(vs), model_runner, budgets)
    _write(result, state, result_path)
    return result


def _new_result(manifest: Dict[str, Any], signers, signer) -> Dict[str, Any]:
    """The result's header: what was checked, where, by which verifier (``passed`` False until the gate runs)."""
    return {
        "schema": RESULT_SCHEMA,
        "bundle_id": manifest["bundle_id"],
        "target": manifest["target"],
        "precision": manifest["precision"],
        "verified_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "python": platform.python_version(), "node": platform.node()},
        "device": device_facts.collect(import_runtimes=True),
        "verifier": {"pwdeploy_version": __version__, "code_dir": os.path.dirname(os.path.abspath(__file__))},
        "signature": {"checked": bool(signers), "signer": signer, "allowed_signers": signers},
        "passed": False,
    }


def _integrity(bundle_dir: str, manifest: Dict[str, Any], result: Dict[str, Any], log) -> bool:
    """Every listed file's sha256 and no unlisted file; records the outcome in ``result``."""
    problems = ["{} is not listed in the manifest".format(extra) for extra in unlisted_entries(bundle_dir, manifest)]
    problems += check_files(bundle_dir, manifest)
    result["integrity"] = {"passed": not problems, "checked": len(manifest["files"]), "problems": problems}
    if problems:
        for problem in problems:
            log("FAILED  integrity: " + problem)
        log("FAILED: {} of {} files do not match the manifest; nothing was run. Copy the bundle again "
            "(pwdeploy ship refuses such a bundle before switching `current`)".format(len(problems), len(manifest["files"])))
        return False
    log("files: {} checked, every sha256 matches the manifest".format(len(manifest["files"])))
    return True


def _check_set(vs, manifest: Dict[str, Any]) -> None:
    if list(vs.group_names) != list(manifest["groups"]):
        raise DataError("the verification set's groups {} differ from the manifest's {}: re-create the bundle "
                        "with `pwdeploy package`".format(vs.group_names, manifest["groups"]))
    counts = vs.group_counts()
    if counts != {g: int(manifest["verification"]["per_group"].get(g, 0)) for g in vs.group_names}:
        raise DataError("the verification set's per-group counts {} differ from the manifest's {}: the bundle "
                        "was altered; re-create it with `pwdeploy package`".format(
                            counts, manifest["verification"]["per_group"]))
    want = [int(d) for d in manifest["model"]["input"]["shape"][1:]]
    if list(vs.input_shape) != want:
        raise DataError("the verification images are {} but the model takes {}: re-create the bundle with "
                        "`pwdeploy package`".format(list(vs.input_shape), want))


def _agreement(preds: np.ndarray, vs) -> Dict[str, Any]:
    """Per group, how many predictions differ from those recorded at packaging time (same images)."""
    out = {}  # type: Dict[str, Any]
    for name in ("reference", "pruned"):
        ref = vs.predictions(name)
        if ref is not None:
            out[name] = agreement(preds, ref, vs.groups, list(vs.group_names))
    return out


def _print_table(log, metrics, gate, agreement, n, model_runner, budgets=()) -> None:
    flips = agreement.get("reference", {}).get("flipped_groups", {})
    log("runtime: {}".format(", ".join("{}={}".format(k, v) for k, v in describe(model_runner).items())))
    log("verification set: {} images; gate: every group within {} points of the reference{}".format(
        n, gate.tolerance, "" if gate.max_group_drop is None else
        " and within {} of the original model".format(gate.max_group_drop)))
    width = max([len(c.group) for c in gate.checks] + [len(b.name) for b in budgets] + [5])
    log("  {:<{w}} {:>5} {:>9} {:>9} {:>7} {:>7}  result".format("group", "n", "accuracy", "reference", "change",
                                                                "flips", w=width))
    for check in gate.checks:
        log("  {:<{w}} {:>5} {:>9} {:>9} {:>7} {:>7}  {}{}".format(
            check.group, check.n, fmt_points(check.accuracy), fmt_points(check.reference), fmt_points(check.change_vs_reference, True),
            flips.get(check.group, "-"), "PASSED" if check.passed else "FAILED",
            "" if not check.reason else " ({})".format(check.reason), w=width))
    log("  {:<{w}} {:>5} {:>9}".format("overall", metrics["overall"]["n"], fmt_points(metrics["overall"]["accuracy"]),
                                       w=width))
    for line in table_lines(list(budgets), width):
        log(line)
    slow = [b.name for b in budgets if not b.passed]
    if gate.passed and not slow:
        log("PASSED: every group reproduces the packaged results within {} points{}".format(
            gate.tolerance, " and the latency budget holds" if budgets else ""))
    elif gate.passed:
        log("FAILED: {} over the latency budget: do not deploy this engine".format(", ".join(slow)))
    else:
        log("FAILED: group(s) {} fell below the packaged results: do not deploy this engine".format(
            ", ".join(gate.failed_groups + slow)))


def _write(result: Dict[str, Any], state: str, result_path: Optional[str]) -> None:
    if result_path is None:
        return
    path = result_path or os.path.join(state, RESULT_FILE)
    try:
        write_json(path, result)
    except OSError as exc:  # a read-only bundle still verifies; the result is printed anyway
        print("note: could not write {} ({})".format(path, exc), file=sys.stderr)
