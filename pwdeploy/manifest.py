"""The bundle manifest (``manifest.json``): its schema and a self-contained validator.

The manifest is checked against this schema before anything else in a bundle is used. Standard library
only and Python 3.8 compatible: it runs on the device and inside the `pwdeploy ship` remote installer,
where no jsonschema is installed. Errors name the offending key.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Dict, Optional

from .fsutil import sha256_file
from .names import MANIFEST, SIGNATURE_FILE  # noqa: F401 - the bundle's names, imported from here too

try:
    from .errors import PwdeployError as _BaseError
except ImportError:  # pragma: no cover - only when run as a loose script
    _BaseError = Exception  # type: ignore[misc,assignment]

SCHEMA = "pwdeploy.bundle/1"
SCHEMA_MAJOR = 1
PRECISIONS = ("fp32", "fp16", "int8")
_FIX = "re-create the bundle with `pwdeploy package`"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_MANIFEST_BYTES = 16 << 20
MAX_RELEASE = 2 ** 63 - 1


class ManifestError(_BaseError):
    """manifest.json is missing, not JSON, or does not follow the bundle schema."""


# --- a tiny schema language: a dict is an object with required keys; the wrappers below add the rest ---
class Opt:
    """The key may be absent."""

    def __init__(self, spec: Any):
        self.spec = spec


class Null:
    """The value may be null."""

    def __init__(self, spec: Any):
        self.spec = spec


class ListOf:
    def __init__(self, spec: Any, min_len: int = 0):
        self.spec, self.min_len = spec, min_len


class MapOf:
    """An object whose keys are free strings and whose values all follow ``spec``."""

    def __init__(self, spec: Any):
        self.spec = spec


NUMBER = "number"

_ENTRY = {"accuracy": Null(NUMBER), "n": int}
_METRICS = {"overall": _ENTRY, "groups": MapOf(_ENTRY)}

SPEC: Dict[str, Any] = {
    "schema": str,
    "bundle_id": str,
    "created": str,
    "pwdeploy_version": str,
    "release": Opt(int),  # signed, monotonic per model.name; absent in older bundles (counts as 0)
    "target": str,
    "precision": str,
    "model": {
        "name": str,
        "arch": str,
        "file": str,
        "format": str,
        "class_names": ListOf(str, 1),
        "input": {"name": str, "shape": ListOf(int, 2), "dtype": str},
        "output": {"name": str},
    },
    "preprocessing": {
        "size": ListOf(int, 2),
        "mean": ListOf(NUMBER, 1),
        "std": ListOf(NUMBER, 1),
        "channel_order": str,
        "layout": str,
        "resize": str,
        "resize_shorter": Opt(Null(int)),
    },
    "groups": ListOf(str, 1),
    "verification": {"file": str, "n": int, "per_group": MapOf(int), "source": str, "seed": int,
                     "batch_size": int},
    "reference": {
        "metrics": _METRICS,
        "runner": str,
        "test_split": Null({"source": str, "metrics": _METRICS}),
        "original": Opt(Null(_METRICS)),
    },
    "gate": {"tolerance": NUMBER, "max_group_drop": Null(NUMBER), "allow_empty_groups": Opt(bool)},
    "calibration": Null(dict),
    "engine": {"build_script": str, "file": Null(str), "tensorrt": Null(str), "min_batch": int,
               "opt_batch": int, "max_batch": int},
    "files": MapOf({"sha256": str, "bytes": int}),
    # signed latency budgets and the original model to time against (pwdeploy.latency_gate)
    "latency": Opt(Null({"budgets": ListOf({"max_ms": NUMBER, "batch": int}), "statistic": str,
                         "min_speedup": Null(NUMBER), "original": Null(str)})),
}


def _type_name(spec: Any) -> str:
    if spec is NUMBER:
        return "a finite number"
    if spec is str:
        return "a string"
    if spec is int:
        return "an integer"
    if spec is bool:
        return "a boolean"
    if spec is dict or isinstance(spec, (dict, MapOf)):
        return "an object"
    if isinstance(spec, ListOf):
        return "a list of {}s".format(_type_name(spec.spec).split(" ", 1)[1])
    if isinstance(spec, Null):
        return _type_name(spec.spec) + " or null"
    return "valid"


def _fail(key: str, message: str) -> ManifestError:
    return ManifestError("{}: key {!r} {}; the bundle is damaged or from another pwdeploy version: {}"
                         .format(MANIFEST, key, message, _FIX))


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check(value: Any, spec: Any, key: str) -> None:
    if isinstance(spec, Opt):
        spec = spec.spec
    if isinstance(spec, Null):
        if value is None:
            return
        spec = spec.spec
    ok = True
    if spec is NUMBER:  # NaN and infinity would switch the gate off
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif spec is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif spec is bool:
        ok = isinstance(value, bool)
    elif spec is str:
        ok = isinstance(value, str)
    elif spec is dict:
        ok = isinstance(value, dict)
    elif isinstance(spec, ListOf):
        if not isinstance(value, list):
            ok = False
        else:
            if len(value) < spec.min_len:
                raise _fail(key, "must hold at least {} item(s)".format(spec.min_len))
            for i, item in enumerate(value):
                _check(item, spec.spec, "{}[{}]".format(key, i))
    elif isinstance(spec, MapOf):
        if not isinstance(value, dict):
            ok = False
        else:
            for name, item in value.items():
                _check(item, spec.spec, "{}.{}".format(key, name))
    elif isinstance(spec, dict):
        if not isinstance(value, dict):
            ok = False
        else:
            for name, sub in spec.items():
                sub_key = "{}.{}".format(key, name) if key else name
                if name not in value:
                    if isinstance(sub, Opt):
                        continue
                    raise _fail(sub_key, "is missing")
                _check(value[name], sub, sub_key)
    if not ok:
        raise _fail(key or "(top level)", "must be {}, got {}".format(_type_name(spec), _short(value)))


def _safe_relpath(name: str) -> bool:
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and "\\" not in name and "\x00" not in name \
        and all(p not in ("", ".", "..") for p in parts)


def validate_manifest(data: Any) -> Dict[str, Any]:
    """Check ``data`` against the bundle schema (structure, then meaning); return it unchanged."""
    if not isinstance(data, dict):
        raise _fail("(top level)", "must be an object, got {}".format(type(data).__name__))
    schema = data.get("schema")
    if not isinstance(schema, str) or not schema.startswith("pwdeploy.bundle/"):
        raise _fail("schema", "must be 'pwdeploy.bundle/<version>', got {}".format(_short(schema)))
    major = schema.split("/", 1)[1].split(".")[0]
    if major != str(SCHEMA_MAJOR):
        raise ManifestError("{}: schema {!r} is not supported by this verifier (it reads {!r}): package and "
                            "verify with the same pwdeploy version".format(MANIFEST, schema, SCHEMA))
    _check(data, SPEC, "")

    if not _SAFE_ID.match(data["bundle_id"]):
        raise _fail("bundle_id", "must use only letters, digits, '.', '_' and '-', got {}".format(
            _short(data["bundle_id"])))
    if not 0 <= data.get("release", 0) <= MAX_RELEASE:
        raise _fail("release", "must be an integer from 0 to {}, got {}".format(MAX_RELEASE, _short(data["release"])))
    if data["precision"] not in PRECISIONS:
        raise _fail("precision", "must be one of {}, got {}".format(", ".join(PRECISIONS), _short(data["precision"])))
    files = data["files"]
    for name, entry in files.items():
        if not _safe_relpath(name) or name in (MANIFEST, SIGNATURE_FILE):
            raise _fail("files", "lists an unsafe or reserved path {}".format(_short(name)))
        if not _SHA256.match(entry["sha256"]):
            raise _fail("files.{}.sha256".format(name), "must be 64 lowercase hex digits")
        if entry["bytes"] < 0:
            raise _fail("files.{}.bytes".format(name), "must be >= 0")
    for key, value in (("model.file", data["model"]["file"]), ("verification.file", data["verification"]["file"]),
                       ("engine.build_script", data["engine"]["build_script"]), ("engine.file", data["engine"]["file"]),
                       ("latency.original", (data.get("latency") or {}).get("original"))):
        if value is not None and value not in files:
            raise _fail(key, "names {} which is not listed under 'files'".format(_short(value)))
    groups = data["groups"]
    if len(set(groups)) != len(groups):
        raise _fail("groups", "must not repeat a group name")
    missing = [g for g in groups if g not in data["reference"]["metrics"]["groups"]]
    if missing:
        raise _fail("reference.metrics.groups", "has no entry for group {}".format(_short(missing[0])))
    unknown = [g for g in data["verification"]["per_group"] if g not in groups]
    if unknown:
        raise _fail("verification.per_group", "names unknown group {}".format(_short(unknown[0])))
    if not 0 <= data["gate"]["tolerance"] <= 100:
        raise _fail("gate.tolerance", "must be between 0 and 100 points")
    drop = data["gate"]["max_group_drop"]
    if drop is not None and not 0 <= drop <= 100:
        raise _fail("gate.max_group_drop", "must be between 0 and 100 points")
    per_group = data["verification"]["per_group"]
    if any(count < 0 for count in per_group.values()) or sum(per_group.values()) != data["verification"]["n"]:
        raise _fail("verification.per_group", "must be counts >= 0 that add up to verification.n")
    engine = data["engine"]
    if not 1 <= engine["min_batch"] <= engine["opt_batch"] <= engine["max_batch"]:
        raise _fail("engine", "batch sizes must satisfy 1 <= min_batch <= opt_batch <= max_batch")
    if data["verification"]["batch_size"] < 1:
        raise _fail("verification.batch_size", "must be >= 1")
    return data


def _no_constant(token: str) -> Any:
    raise ValueError("{} is not a number JSON allows".format(token))


def parse_manifest(raw: bytes, where: str = MANIFEST) -> Dict[str, Any]:
    try:  # NaN/Infinity tokens refused; absurd nesting ends in RecursionError, not a traceback
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise ManifestError("{} is nested too deeply to be a manifest; the bundle is damaged: {}"
                            .format(where, _FIX)) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError("{} is not valid JSON ({}); the bundle is damaged: {}".format(where, exc, _FIX)) from None
    return validate_manifest(data)


def read_manifest(bundle_dir: str) -> bytes:
    """The raw bytes of ``BUNDLE_DIR/manifest.json`` (what a signature covers)."""
    path = os.path.join(str(bundle_dir), MANIFEST)
    if os.path.islink(path) or not os.path.isfile(path):
        raise ManifestError("{} has no {}: pass the folder of an unpacked pwdeploy bundle".format(bundle_dir, MANIFEST))
    with open(path, "rb") as fh:
        raw = fh.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError("{} is larger than {} bytes: not a pwdeploy manifest".format(path, MAX_MANIFEST_BYTES))
    return raw


def load_manifest(bundle_dir: str) -> Dict[str, Any]:
    """Read and validate ``BUNDLE_DIR/manifest.json``."""
    return parse_manifest(read_manifest(bundle_dir), os.path.join(str(bundle_dir), MANIFEST))


def read_signature(bundle_dir: str) -> Optional[bytes]:
    """BUNDLE_DIR/manifest.json.sig, or None when the bundle is unsigned."""
    path = os.path.join(str(bundle_dir), SIGNATURE_FILE)
    if os.path.islink(path) or not os.path.isfile(path):
        return None
    with open(path, "rb") as fh:
        return fh.read(1 << 20)


def allowed_paths(manifest: Dict[str, Any]) -> set:
    """Every path a bundle may hold: the listed files, their folders, the manifest and its signature."""
    allowed = {MANIFEST, SIGNATURE_FILE}
    for name in manifest["files"]:
        parts = name.split("/")
        allowed.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return allowed


def unlisted_entries(bundle_dir: str, manifest: Dict[str, Any]) -> list:
    """Files and folders under ``bundle_dir`` that the manifest does not list (a ``numpy.py`` dropped beside
    the code, a ``__pycache__``, a planted ``model.plan`` or ``verify_result.json``): the trust anchor refuses
    them before importing anything. The device writes its own outputs into a state folder outside the bundle."""
    allowed = allowed_paths(manifest)
    extra = []
    for dirpath, dirs, files in os.walk(str(bundle_dir)):
        for name in sorted(dirs) + sorted(files):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, str(bundle_dir)).replace(os.sep, "/")
            if rel not in allowed:
                extra.append(rel)
        dirs[:] = [d for d in dirs if os.path.relpath(os.path.join(dirpath, d), str(bundle_dir)).replace(
            os.sep, "/") in allowed]
    return sorted(extra)


def file_problem(bundle_dir: str, name: str, entry: Dict[str, Any]) -> Optional[str]:
    """None when ``name`` exists with the recorded size and sha256, else what is wrong (one line)."""
    path = os.path.join(str(bundle_dir), *name.split("/"))
    if os.path.islink(path) or not os.path.isfile(path):
        return "{} is missing".format(name)
    size = os.path.getsize(path)
    if size != entry["bytes"]:
        return "{} has {} bytes, the manifest says {}".format(name, size, entry["bytes"])
    if sha256_file(path) != entry["sha256"]:
        return "{} does not match its sha256 in the manifest".format(name)
    return None


def check_files(bundle_dir: str, manifest: Dict[str, Any]) -> list:
    """Every problem with the files the manifest lists (empty when all sha256 match)."""
    problems = []
    for name in sorted(manifest["files"]):
        problem = file_problem(bundle_dir, name, manifest["files"][name])
        if problem:
            problems.append(problem)
    return problems
