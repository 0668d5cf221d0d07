"""The device's trust comes from outside the bundle it checks: the trust anchor, ordered releases, rollback,
fail-closed trust files, symlinked releases, planted files, exact flags, checked verification sets, and the
one-line refusals of hostile input. Real ssh-keygen throughout; real sshd on 127.0.0.1 for ship."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sshd  # noqa: E402
from run_fixture import anchor_file, copy_run, damage_classifier, extract, read_json, rehash, repack, \
    tiny_bundle_run  # noqa: E402

from pwdeploy.cli import main  # noqa: E402
from pwdeploy.device.install import InstallError, install, prune_releases, rollback, switch  # noqa: E402
from pwdeploy.package import package_run  # noqa: E402

TIMEOUT = 180
needs_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
pytestmark = needs_keygen
REPO = str(Path(__file__).resolve().parents[1])


def _keypair(folder: Path, name: str) -> Path:
    return sshd.keygen(folder / name, comment=name)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Releases 1 and 2 of one model signed by the release key, an unsigned bundle, the signers file."""
    base = tmp_path_factory.getbasetemp()
    run = tiny_bundle_run(base)
    out = tmp_path_factory.mktemp("trust")
    key = _keypair(out, "release")
    signers = out / "allowed_signers"
    signers.write_text(f'ci@example.com namespaces="pwdeploy" {(out / "release.pub").read_text()}')
    return {"r1": package_run(run, out / "r1.tar.gz", quiet=True, sign_key=str(key), release=1),
            "r2": package_run(run, out / "r2.tar.gz", quiet=True, sign_key=str(key), release=2),
            "unsigned": package_run(run, out / "unsigned.tar.gz", quiet=True, release=1),
            "key": key, "signers": signers, "anchor": anchor_file(base), "out": out}


def _deploy(tmp_path: Path, made) -> Path:
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    shutil.copyfile(made["signers"], deploy / "allowed_signers")
    return deploy


def anchor(made, *args, cwd=None, env=None, isolated=True) -> subprocess.CompletedProcess:
    """The device's trust anchor, as an operator runs it (a file installed outside any bundle)."""
    flags = ["-I", "-B"] if isolated else []
    return subprocess.run([sys.executable, *flags, str(made["anchor"]), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def _one_line_error(proc, needle: str) -> None:
    err = proc.stderr.strip()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in err and "Traceback" not in err and len(err.splitlines()) == 1, err


def _quiet(_line):
    return None


# --- 1. downgrade ---------------------------------------------------------------------------------------------------

@pytest.mark.skipif(sshd.missing_reason() is not None, reason=str(sshd.missing_reason()))
def test_1_an_older_signed_release_shipped_over_a_newer_one_is_refused(made, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    deploy = _deploy(tmp_path, made)
    with sshd.running_sshd(tmp_path / "sshd") as server:
        target = [f"{server.alias}:{deploy}", "-F", str(server.client_config)]
        assert main(["ship", str(made["r1"]), *target, "--keep", "1", "--bootstrap"]) == 0
        r1 = os.readlink(deploy / "current").split("/", 1)[1]
        from pwdeploy.anchor import anchor_sha256

        installed = deploy / ".pwdeploy" / "anchor" / "pwdeploy-device.py"  # the device's own trust anchor
        assert installed.read_bytes() == made["anchor"].read_bytes()
        out = " ".join(capsys.readouterr().out.split())
        assert "trust anchor installed" in out and f"(sha256 {anchor_sha256()})" in out
        assert main(["ship", str(made["r2"]), *target, "--keep", "1"]) == 0
        r2 = os.readlink(deploy / "current").split("/", 1)[1]
        # --keep 1 never removes the release `current` would fall back to
        assert sorted(p.name for p in (deploy / "releases").iterdir() if p.name != ".order") == sorted([r1, r2])
        capsys.readouterr()
        assert main(["ship", str(made["r1"]), *target, "--verify", "--keep", "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "release 1 of model" in err and "older than release 2" in err
        assert "--allow-downgrade" in err and f"still points at releases/{r2}" in err
        assert os.readlink(deploy / "current") == f"releases/{r2}" and (deploy / "releases" / r1).is_dir()
        assert not list((deploy / ".incoming").iterdir())
    # rollback is the one way back (the device subcommand, through the anchor --bootstrap installed): one JSON line
    proc = subprocess.run([sys.executable, "-I", "-B", str(installed), "rollback", str(deploy)], capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout)
    assert line["from"]["release_number"] == 2 and line["to"]["release"] == f"releases/{r1}"
    assert line["to"]["release_number"] == 1
    assert os.readlink(deploy / "current") == f"releases/{r1}"


def test_1_release_rules_on_the_device(made, tmp_path):
    deploy = _deploy(tmp_path, made)
    first = install(str(made["r1"]), str(deploy), log=_quiet)
    assert install(str(made["r1"]), str(deploy), log=_quiet)["release"] == first["release"]  # same release again
    root = extract(made["r1"], tmp_path / "other")
    manifest = read_json(root / "manifest.json")
    manifest["gate"]["tolerance"] = 5.0  # another bundle claiming release 1 (unsigned: signature off here)
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "manifest.json.sig").unlink()
    other = repack(root, tmp_path / "other.tar.gz", bundle_id=root.name + "-other")
    os.unlink(deploy / "allowed_signers")
    with pytest.raises(InstallError, match="release 1 of model .* already installed as a different bundle"):
        install(str(other), str(deploy), log=_quiet)
    second = install(str(made["r2"]), str(deploy), log=_quiet)
    with pytest.raises(InstallError, match="older than release 2"):
        switch(first["release"], str(deploy), log=_quiet)
    lines = []
    switch(first["release"], str(deploy), allow_downgrade=True, log=lines.append)
    assert any(line.startswith("warning: release 1") for line in lines)
    switch(second["release"], str(deploy), log=_quiet)
    # rollback skips a release that no longer verifies, and refuses when nothing earlier is left
    (Path(first["release"]) / "README.txt").write_text("edited\n")
    with pytest.raises(InstallError, match="no earlier verified release.*1 unverifiable skipped"):
        rollback(str(deploy), log=_quiet)
    assert os.readlink(deploy / "current") == os.path.relpath(second["release"], deploy)
    proc = anchor(made, "rollback", deploy)
    lines = proc.stderr.strip().splitlines()  # the skipped release is named first, then the one-line error
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert lines[0].startswith("skipping ") and "README.txt has 7 bytes" in lines[0]
    assert len(lines) == 2 and lines[1].startswith("error: no earlier verified release")


def test_1_retention_keeps_current_and_its_rollback_target(made, tmp_path):
    deploy = tmp_path / "deploy"
    releases = []
    for number in (1, 2, 3):
        root = extract(made["unsigned"], tmp_path / f"u{number}")
        archive = repack(root, tmp_path / f"u{number}.tar.gz", bundle_id=f"{root.name}-r{number}", release=number)
        releases.append(install(str(archive), str(deploy), keep=1, log=_quiet)["release"])
    left = sorted(p.name for p in (deploy / "releases").iterdir() if p.name != ".order")
    assert left == sorted(os.path.basename(r) for r in releases[1:])  # 3 (current) and 2 (its fallback)
    assert prune_releases(str(deploy), 1, log=_quiet) == []


# --- 2. the verifier is not the bundle's ----------------------------------------------------------------------------

def _forge(root: Path, marker: Path) -> None:
    """The attack: a signature.py that says 'good', a gate that does nothing, a damaged model, all re-hashed."""
    (root / "pwdeploy" / "signature.py").write_text(
        (root / "pwdeploy" / "signature.py").read_text()
        + f"\n\ndef verify(m, s, a, what=''):\n    open({str(marker)!r}, 'w').write('forged')\n"
          "    return 'alice@example.com'\n")
    (root / "pwdeploy" / "gate.py").write_text((root / "pwdeploy" / "gate.py").read_text() + "\n# tampered\n")
    damage_classifier(root / "model.onnx")
    rehash(root, ["pwdeploy/signature.py", "pwdeploy/gate.py", "model.onnx"])


def test_2_a_bundle_that_forges_its_own_signature_check_is_refused(made, tmp_path):
    marker = tmp_path / "FORGED"
    root = extract(made["r1"], tmp_path / "x")
    _forge(root, marker)
    proc = anchor(made, "verify", ".", "--allowed-signers", made["signers"], cwd=root)
    _one_line_error(proc, "signature does not match manifest.json (changed after signing")
    assert not marker.exists() and "PASSED" not in proc.stdout
    # the same inside an installed release, checked against DEPLOY/allowed_signers by default
    deploy = _deploy(tmp_path, made)
    release = Path(install(str(made["r1"]), str(deploy), log=_quiet)["release"])
    _forge(release, marker)
    proc = anchor(made, "verify", deploy / "current")
    _one_line_error(proc, "signature does not match manifest.json")
    assert not marker.exists()
    assert not (release / "pwdeploy" / "device" / "launch.py").exists()  # bundles carry no verifier of themselves


def test_2_a_good_signed_release_verifies_through_the_anchor(made, tmp_path):
    deploy = _deploy(tmp_path, made)
    release = Path(install(str(made["r2"]), str(deploy), log=_quiet)["release"])
    proc = anchor(made, "verify", deploy / "current", "--result-line")
    assert proc.returncode == 0, proc.stderr
    assert "signature: good, signed by ci@example.com" in proc.stdout and "checked by the trust anchor" in proc.stdout
    state = deploy / ".pwdeploy" / "state" / release.name
    assert read_json(state / "verify_result.json")["passed"] is True
    assert anchor(made, "verify", release).returncode == 0  # verifying again: the release is unchanged


def test_2_the_anchor_is_one_pinnable_stdlib_file(made, tmp_path, capsys):
    from pwdeploy.anchor import anchor_sha256

    assert main(["anchor", "-o", str(tmp_path / "pwdeploy-device.py")]) == 0
    digest, path = capsys.readouterr().out.split()
    assert digest == anchor_sha256() and Path(path).read_bytes() == made["anchor"].read_bytes()
    import hashlib
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
    # stdlib only: it runs with numpy unimportable (a blocker first on the path)
    block = tmp_path / "block" / "numpy"
    block.mkdir(parents=True)
    (block / "__init__.py").write_text("raise ImportError('no numpy')\n")
    code = ("import runpy, sys; sys.path.insert(0, sys.argv[1]); sys.argv = sys.argv[2:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    deploy = _deploy(tmp_path, made)
    proc = subprocess.run([sys.executable, "-I", "-B", "-c", code, str(block.parent), path, "install",
                           str(made["r1"]), str(deploy)], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert "signed by ci@example.com" in proc.stdout


# --- 3. isolation before anything is imported ------------------------------------------------------------------------

def test_3_planted_modules_never_run_even_without_isolation_flags(made, tmp_path):
    marker = tmp_path / "PLANTED"
    root = extract(made["unsigned"], tmp_path / "x")
    payload = f"open({str(marker)!r}, 'w').write('ran')\nfrom json import *\n"
    (root / "pwdeploy" / "device" / "json.py").write_text(payload)
    (root / "json.py").write_text(payload)
    env = dict(os.environ, PYTHONPATH=f"{root}:{root / 'pwdeploy' / 'device'}")
    proc = anchor(made, "verify", ".", cwd=root, env=env, isolated=False)
    _one_line_error(proc, "is in the bundle but not listed in its manifest")
    assert not marker.exists()


# --- 4. planted engine / result files --------------------------------------------------------------------------------

@pytest.mark.parametrize("planted", ["model.plan", "verify_result.json", "timing.cache"])
def test_4_files_planted_in_a_signed_bundle_are_refused(made, tmp_path, planted):
    root = extract(made["r1"], tmp_path / "x")
    (root / planted).write_text("planted\n")
    proc = anchor(made, "verify", ".", "--allowed-signers", made["signers"], cwd=root)
    _one_line_error(proc, f"{planted} is in the bundle but not listed in its manifest")
    archive = tmp_path / "planted.tar.gz"
    with tarfile.open(made["r1"]) as src, tarfile.open(archive, "w:gz") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo(f"{root.name}/{planted}")
        info.size = 8
        dst.addfile(info, io.BytesIO(b"planted\n"))
    with pytest.raises(InstallError, match=f"member {planted} is not listed"):
        install(str(archive), str(_deploy(tmp_path, made)), log=_quiet)


# --- 5. exact flag names -----------------------------------------------------------------------------------------------

def test_5_an_abbreviated_flag_is_refused_before_anything_runs(made, tmp_path):
    marker = tmp_path / "GATE_RAN"
    root = extract(made["unsigned"], tmp_path / "x")
    (root / "pwdeploy" / "gate.py").write_text((root / "pwdeploy" / "gate.py").read_text()
                                               + f"\nopen({str(marker)!r}, 'w').write('ran')\n")
    rehash(root, ["pwdeploy/gate.py"])
    proc = anchor(made, "verify", ".", "--allowed-s", made["signers"], cwd=root)
    _one_line_error(proc, "unrecognized arguments: --allowed-s")
    assert not marker.exists()
    env = dict(os.environ, PYTHONPATH=REPO)
    for argv in (["verify", ".", "--allowed-s", str(made["signers"])], ["install", "a.tar.gz", "d", "--allow-d"],
                 ["rollback", "d", "--kee", "1"]):
        proc = subprocess.run([sys.executable, "-m", "pwdeploy.device", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT)
        _one_line_error(proc, "flags must be spelled out in full")


# --- 6. the roll-back path writes nothing into releases -------------------------------------------------------------

def test_6_rolling_back_leaves_every_release_verifiable(made, tmp_path):
    deploy = _deploy(tmp_path, made)
    first = install(str(made["r1"]), str(deploy), log=_quiet)
    second = install(str(made["r2"]), str(deploy), log=_quiet)
    proc = anchor(made, "rollback", deploy, cwd=deploy / "current")  # the documented command, from inside
    assert proc.returncode == 0 and json.loads(proc.stdout)["to"]["release_number"] == 1, proc.stderr
    assert not list((deploy / "releases").rglob("__pycache__"))
    for release in (first["release"], second["release"]):
        assert anchor(made, "verify", release).returncode == 0
    # a release someone ran Python in (bytecode written into it) is not reused by a re-ship
    cache = Path(second["release"]) / "pwdeploy" / "__pycache__"
    cache.mkdir()
    (cache / "gate.cpython-38.pyc").write_bytes(b"\0" * 16)
    _one_line_error(anchor(made, "verify", second["release"]), "pwdeploy/__pycache__ is in the bundle but not listed")
    again = install(str(made["r2"]), str(deploy), log=_quiet)
    assert again["release"] != second["release"] and Path(again["release"]).parent == Path(second["release"]).parent
    assert anchor(made, "verify", deploy / "current").returncode == 0


# --- 7. trust files fail closed ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, message", [("folder", "is not a regular file"), ("dangling", "dangling symlink")])
def test_7_an_unusable_allowed_signers_path_refuses_instead_of_skipping(made, tmp_path, kind, message):
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    signers = deploy / "allowed_signers"
    if kind == "folder":
        signers.mkdir()
    else:
        signers.symlink_to(tmp_path / "gone")
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-m", "pwdeploy.device", "install", str(made["unsigned"]), str(deploy)],
                          env=env, capture_output=True, text=True, timeout=TIMEOUT)
    _one_line_error(proc, message)
    assert not (deploy / "current").exists() and not (deploy / "releases").exists()
    root = extract(made["unsigned"], tmp_path / "x")
    _one_line_error(anchor(made, "verify", root, "--allowed-signers", signers), message)


# --- 8. symlinked releases ---------------------------------------------------------------------------------------------

def test_8_a_planted_release_symlink_is_refused(made, tmp_path):
    deploy = _deploy(tmp_path, made)
    bundle_id = read_json(extract(made["r1"], tmp_path / "ids") / "manifest.json")["bundle_id"]
    outside = extract(made["r1"], tmp_path / "outside")
    (deploy / "releases").mkdir()
    (deploy / "releases" / bundle_id).symlink_to(outside)
    with pytest.raises(InstallError, match="is a symlink, not a release folder"):
        install(str(made["r1"]), str(deploy), log=_quiet)
    assert not (deploy / "current").exists()
    (deploy / "current").symlink_to(f"releases/{bundle_id}")  # planted by hand
    _one_line_error(anchor(made, "verify", deploy / "current"), "is a symlink, not a release folder")
    with pytest.raises(InstallError, match="symlinks are refused"):
        switch(str(deploy / "releases" / bundle_id), str(deploy), log=_quiet)
    assert sorted(p.name for p in outside.parent.iterdir()) == [bundle_id]  # nothing written outside


# --- 9. verification sets are checked ------------------------------------------------------------------------------

def _rewrite_set(run: Path, change) -> None:
    path = run / "verification_set.npz"
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _meta(arrays, edit):
    meta = json.loads(arrays["meta"].tobytes().decode())
    edit(meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(labels=a["labels"] + 7), "labels outside 0..1"),
    (lambda a: a["logits_pruned"].__setitem__((0, 0), np.nan), "logits_pruned holds NaN/inf"),
    (lambda a: a.update(logits_pruned=a["logits_pruned"][:, :1]), "logits_pruned has shape"),
    (lambda a: _meta(a, lambda m: m.pop("group_names")), "lacks group_names"),  # weak: was KeyError, exit 3
    (lambda a: a.update({k: a[k][:0] for k in ("images", "labels", "groups", "indices", "logits_pruned")}),
     "holds no images"),  # weak: empty set
])
def test_9_a_bad_verification_set_is_refused_not_passed(tmp_path, capsys, change, message):
    run = copy_run(tmp_path, tmp_path / "run")
    _rewrite_set(run, change)
    assert main(["verify", str(run), "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


# --- weak cases: the right message, exit 2, no traceback -----------------------------------------------------------

@pytest.mark.parametrize("entry, outcome", [
    ('ci@example.com namespaces="other" {key}', "lists, but not for the 'pwdeploy' namespace"),
    ('ci@example.com valid-before="20200101" {key}', "is expired or not yet valid"),
    ('old@example.com namespaces="other" {key}\nci@example.com namespaces="pwdeploy" {key}', "ci@example.com"),
])
def test_weak_signer_entries_get_the_right_message(made, tmp_path, entry, outcome):
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    key = Path(str(made["key"]) + ".pub").read_text().strip()
    (deploy / "allowed_signers").write_text(entry.format(key=key) + "\n")
    lines = []
    if "@" in outcome and " " not in outcome:  # listed twice: the second line applies, the bundle installs
        install(str(made["r1"]), str(deploy), log=lines.append)
        assert any(f"signed by {outcome}" in line for line in lines)
        return
    with pytest.raises(InstallError, match=outcome.replace("(", r"\(")) as info:
        install(str(made["r1"]), str(deploy), log=lines.append)
    assert "changed after signing" not in str(info.value) and "\n" not in str(info.value)


def test_weak_non_files_as_model_say_what_they_are(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fifo = tmp_path / "model.fifo"
    os.mkfifo(fifo)
    (tmp_path / "folder").mkdir()
    for model, message in ((fifo, "is a FIFO"), ("/dev/zero", "is a character device"),
                           (tmp_path / "folder", "is a folder")):
        assert main(["compress", str(model), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "not found" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("name, message", [
    ("n" * 300, "names may have at most"),
    ("/".join(["d" * 200] * 21), "over the 4096-byte limit"),
    (os.fsdecode(b"run-\xff"), "is not valid UTF-8"),
])
def test_weak_unusable_out_names_fail_at_once(tmp_path, capsys, monkeypatch, name, message):
    monkeypatch.chdir(tmp_path)
    assert main(["compress", "missing.pt", "--out", name]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_weak_a_huge_manifest_is_named_as_too_large(made, tmp_path):
    archive = tmp_path / "huge.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        data = os.urandom(20 << 20)  # random: the compression-ratio cap does not apply
        info = tarfile.TarInfo("b/manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(InstallError, match="manifest.json is 20971520 bytes, over the 16777216 byte limit"):
        install(str(archive), str(tmp_path / "deploy"), log=_quiet)


def test_weak_a_checkpoint_whose_classifier_disagrees_with_its_class_count(tmp_path, capsys, monkeypatch):
    from pwdeploy.models.checkpoint import save_checkpoint
    from pwdeploy.models.small import SmallCNN

    monkeypatch.chdir(tmp_path)
    save_checkpoint(SmallCNN(2, width=8), tmp_path / "m.pt", arch="smallcnn", num_classes=5)
    assert main(["compress", str(tmp_path / "m.pt"), "--out", "o"]) == 2
    err = capsys.readouterr().err.strip()
    assert "claims 5 classes but its classifier gives 2 logits" in err and len(err.splitlines()) == 1


def test_weak_an_artifact_of_another_class_count_is_the_wrong_model(tmp_path, capsys):
    import torch

    from pwdeploy.exporters.onnx_export import export_onnx
    from pwdeploy.models.small import SmallCNN

    run = copy_run(tmp_path, tmp_path / "run")
    torch.manual_seed(0)
    export_onnx(SmallCNN(3, width=8).eval(), tmp_path / "three.onnx", tuple(read_json(run / "config.json")["input_shape"]))
    code = main(["verify", str(tmp_path / "three.onnx"), "--reference", str(run), "--bootstrap", "0", "--force"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "gives 3 logits per image but its reference gives 2" in err and len(err.splitlines()) == 1


def test_weak_csv_paths_stay_inside_the_data_root(tmp_path):
    from fixtures_data import read_manifest_rows, write_csv_manifest, write_manifest

    from pwdeploy.data import DataSpec, create_dataset
    from pwdeploy.errors import DataError

    root = write_csv_manifest(tmp_path / "d", n=30, size=(8, 8))
    secret = tmp_path / "secret.png"
    shutil.copyfile(root / read_manifest_rows(root / "manifest.csv")[0]["path"], secret)
    for path in ("../secret.png", str(secret)):
        rows = read_manifest_rows(root / "manifest.csv")
        rows[0]["path"] = path
        write_manifest(root / "manifest.csv", rows, columns=list(rows[0]))
        with pytest.raises(DataError, match="line 2: path .* resolves outside the data root .*allow_outside_root=true"):
            create_dataset(DataSpec("csv", str(root), {"size": 8}), "train")
        ds = create_dataset(DataSpec("csv", str(root), {"size": 8, "allow_outside_root": True}), rows[0]["split"])
        assert secret.resolve() in [p.resolve() for p in ds.paths]
