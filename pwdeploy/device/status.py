"""``status DEPLOY_DIR``: what this device runs now, its last verification and what it is, as one JSON line.

Run by the trust anchor (``python3 -I -B pwdeploy-device.py status DEPLOY_DIR``; `pwdeploy status` sends
the anchor over ssh's stdin). It reads the release folders' manifests, `current`, the rollback target and
the state folder's verify_result.json (device output, shown as it is: nothing is decided from it), and the
device facts without importing any runtime. Writes nothing. Standard library only, Python 3.8 compatible.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Optional

from . import EXIT_ERROR
from .facts import collect
from .releases import RELEASES, current, fallback, installed
from .state import STATE

RESULT_FILE = "verify_result.json"  # what device/verify.py writes into the state folder
MAX_RESULT_BYTES = 16 << 20


def _entry(release: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if release is None:
        return None
    return {"release": "{}/{}".format(RELEASES, release["name"]), "bundle_id": release["bundle_id"],
            "model": release["model"], "release_number": release["release"]}


def last_verification(deploy_dir: str, name: str) -> Optional[Dict[str, Any]]:
    """The short form of DEPLOY_DIR/.pwdeploy/state/<name>/verify_result.json (None when never verified)."""
    path = os.path.join(deploy_dir, STATE, name, RESULT_FILE)
    try:
        with open(path, "rb") as fh:
            result = json.loads(fh.read(MAX_RESULT_BYTES).decode("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict):
        return None
    gate = result.get("gate") if isinstance(result.get("gate"), dict) else {}
    speed = result.get("speed") if isinstance(result.get("speed"), dict) else {}
    return {"passed": result.get("passed"), "verified_at": result.get("verified_at"),
            "failed_groups": gate.get("failed_groups"), "groups": len(gate.get("groups") or []),
            "runner": result.get("runner"), "latency": speed.get("batches"),
            "latency_gate": result.get("latency_gate")}


def status(deploy_dir: str) -> Dict[str, Any]:
    deploy_dir = os.path.abspath(os.path.expanduser(deploy_dir))
    now = current(deploy_dir)
    releases = installed(deploy_dir)  # type: List[Dict[str, Any]]
    return {"deploy_dir": deploy_dir, "current": _entry(now),
            "releases": [_entry(r) for r in sorted(releases, key=lambda r: (r["model"], r["release"]))],
            "rollback_to": _entry(fallback(deploy_dir)) if now else None,
            "last_verification": last_verification(deploy_dir, now["name"]) if now else None,
            "device": collect(import_runtimes=False)}


def main(argv: List[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("error: usage: pwdeploy-device.py status DEPLOY_DIR", file=sys.stderr)
        return EXIT_ERROR
    if not os.path.isdir(argv[0]):
        print("error: {} is not a folder: nothing is deployed there".format(argv[0]), file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(status(argv[0]), sort_keys=True))
    return 0
