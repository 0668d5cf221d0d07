"""Release numbers on the device: which installed release is newer, what `current` falls back to.

Every bundle's signed manifest carries ``release``, a number that only grows for one model name
(``pwdeploy package --release N``; default: the packaging time as YYYYMMDDHHMMSS). The device refuses to
install or switch to a release older than the one it runs for that model (a validly signed but old bundle
is a rollback attack), unless the operator says ``--allow-downgrade``; ``rollback DEPLOY_DIR`` is the one
way back, to the newest verified release below `current`. Standard library only, Python 3.8 compatible.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from ..errors import PwdeployError
from ..fsutil import sha256_bytes
from ..manifest import MANIFEST, parse_manifest, read_manifest

RELEASES = "releases"
CURRENT = "current"


def release_number(manifest: Dict[str, Any]) -> int:
    """The manifest's release number; 0 for bundles packaged before release numbers existed."""
    return int(manifest.get("release", 0))


def model_name(manifest: Dict[str, Any]) -> str:
    return str(manifest["model"]["name"])


def describe(path: str, order: Optional[List[str]] = None) -> Optional[Dict[str, Any]]:
    """What the release folder ``path`` holds (None when it is no readable release: those are never
    compared, kept or rolled back to)."""
    if os.path.islink(path) or not os.path.isdir(path):
        return None
    try:
        raw = read_manifest(path)
        manifest = parse_manifest(raw, os.path.join(path, MANIFEST))
    except (PwdeployError, OSError):
        return None
    name = os.path.basename(path)
    return {"name": name, "path": path, "bundle_id": manifest["bundle_id"], "model": model_name(manifest),
            "release": release_number(manifest), "manifest_sha256": sha256_bytes(raw),
            "installed": (order or []).index(name) if name in (order or []) else -1}


def installed(deploy_dir: str, order: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """Every readable release folder under DEPLOY_DIR/releases (symlinks and hidden names skipped)."""
    releases = os.path.join(deploy_dir, RELEASES)
    if not os.path.isdir(releases) or os.path.islink(releases):
        return []
    found = [describe(os.path.join(releases, name), order) for name in sorted(os.listdir(releases))
             if not name.startswith(".")]
    return [entry for entry in found if entry is not None]


def current(deploy_dir: str, order: Optional[List[str]] = None) -> Optional[Dict[str, Any]]:
    """The release `current` points at, when it is one of DEPLOY_DIR/releases/*."""
    link = os.path.join(deploy_dir, CURRENT)
    if not os.path.islink(link):
        return None
    target = os.path.realpath(link)
    if os.path.dirname(target) != os.path.realpath(os.path.join(deploy_dir, RELEASES)):
        return None
    return describe(os.path.join(deploy_dir, RELEASES, os.path.basename(target)), order)


def floor(deploy_dir: str, model: str) -> Optional[Dict[str, Any]]:
    """The release a new bundle of ``model`` must not be older than: `current` when it runs that model, else
    the newest installed release of it."""
    now = current(deploy_dir)
    if now is not None and now["model"] == model:
        return now
    same = [r for r in installed(deploy_dir) if r["model"] == model]
    return max(same, key=lambda r: r["release"]) if same else None


def order_problem(deploy_dir: str, manifest: Dict[str, Any], raw: bytes) -> Optional[str]:
    """Why ``manifest`` may not be installed or switched to over what DEPLOY_DIR runs (None: it may). Same
    release number: only the very same manifest (a reinstall)."""
    model, number = model_name(manifest), release_number(manifest)
    base = floor(deploy_dir, model)
    if base is None:
        return None
    where = "{}/{}".format(RELEASES, base["name"])
    if number < base["release"]:
        return ("release {} of model {!r} is older than release {} ({}) installed here: refused as a downgrade; "
                "use `rollback DEPLOY_DIR` to go back to a verified earlier release, or pass --allow-downgrade"
                .format(number, model, base["release"], where))
    if number == base["release"] and sha256_bytes(raw) != base["manifest_sha256"]:
        return ("release {} of model {!r} is already installed as a different bundle ({}): refused; package the "
                "new bundle with a higher --release".format(number, model, where))
    return None


def fallback(deploy_dir: str, order: Optional[List[str]] = None) -> Optional[Dict[str, Any]]:
    """The release `rollback` would switch to: the newest installed release of `current`'s model below it."""
    candidates = older_than_current(deploy_dir, order)
    return candidates[0] if candidates else None


def older_than_current(deploy_dir: str, order: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """Installed releases of `current`'s model with a lower release number, newest first."""
    now = current(deploy_dir, order)
    if now is None:
        return []
    older = [r for r in installed(deploy_dir, order) if r["model"] == now["model"] and r["release"] < now["release"]]
    return sorted(older, key=lambda r: (r["release"], r["installed"]), reverse=True)
