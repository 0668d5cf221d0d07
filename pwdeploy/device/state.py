"""Where the device writes what it makes for a bundle: never inside the bundle.

A release folder stays exactly what its signed manifest lists (anything else in it is refused), so the
engine built on the device, its timing cache and build log, and verify_result.json go to a state folder:
DEPLOY_DIR/.pwdeploy/state/<release> for an installed release, else BUNDLE.pwdeploy-state beside an
unpacked bundle (``--state-dir`` overrides). The engine is recorded (engine.json: its sha256, the TensorRT
version and the manifest it was built for) and used only while it matches. Standard library only.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from ..fsutil import sha256_file, write_json
from ..signature import deploy_dir_of

STATE = os.path.join(".pwdeploy", "state")
ENGINE_RECORD = "engine.json"


def state_dir(bundle: str, explicit: Optional[str] = None) -> str:
    """The state folder of ``bundle`` (created by the caller when it writes)."""
    if explicit:
        return os.path.abspath(explicit)
    path = os.path.abspath(bundle)
    if os.path.islink(path):
        path = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
    deploy = deploy_dir_of(path)
    if deploy:
        return os.path.join(deploy, STATE, os.path.basename(path))
    return path.rstrip(os.sep) + ".pwdeploy-state"


def record_engine(state: str, engine: str, tensorrt: Optional[str], manifest_sha256: str) -> Dict[str, Any]:
    """Write state/engine.json for the engine just built (atomically)."""
    record = {"engine": os.path.basename(engine), "sha256": sha256_file(engine), "bytes": os.path.getsize(engine),
              "tensorrt": tensorrt, "manifest_sha256": manifest_sha256}
    write_json(os.path.join(state, ENGINE_RECORD), record)
    return record


def recorded_engine(state: str, engine: str, tensorrt: Optional[str], manifest_sha256: str) -> Optional[str]:
    """Why the engine at ``engine`` may not be used (None: it is the one recorded, for this TensorRT and this
    manifest)."""
    path = os.path.join(state, ENGINE_RECORD)
    try:
        with open(path) as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return "no record of it in {}".format(path)
    if not isinstance(record, dict):
        return "{} is not a record".format(path)
    if record.get("manifest_sha256") != manifest_sha256 or record.get("tensorrt") != tensorrt:
        return "it was built for another bundle or TensorRT version"
    if os.path.islink(engine) or not os.path.isfile(engine) or record.get("sha256") != sha256_file(engine):
        return "it changed after it was built (sha256 differs from {})".format(path)
    return None
