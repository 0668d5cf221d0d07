"""Security, bundle side: signed manifests (real ssh-keygen), the isolated device verifier, install checking
tar members against the manifest before writing, archive caps and hostile manifests."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sshd  # noqa: E402
from run_fixture import anchor_file, damage_classifier, extract, read_json, rehash, repack, state_of, \
    tiny_bundle_run  # noqa: E402

from pwdeploy.cli import main  # noqa: E402
from pwdeploy.device.install import InstallError, install  # noqa: E402
from pwdeploy.manifest import ManifestError, parse_manifest  # noqa: E402
from pwdeploy.package import package_run  # noqa: E402
from pwdeploy.safe_extract import MAX_MEMBERS, UnsafeArchiveError, check_archive  # noqa: E402

TIMEOUT = 180
NO_SSH_KEYGEN = shutil.which("ssh-keygen") is None
needs_keygen = pytest.mark.skipif(NO_SSH_KEYGEN, reason="ssh-keygen not installed (apt-get install openssh-client)")


def _keypair(folder: Path, name: str) -> Path:
    return sshd.keygen(folder / name, comment=name)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    run = tiny_bundle_run(tmp_path_factory.getbasetemp())
    _BASE[:] = [tmp_path_factory.getbasetemp()]
    out = tmp_path_factory.mktemp("trust-bundles")
    made = {"unsigned": package_run(run, out / "unsigned.tar.gz", quiet=True)}
    if not NO_SSH_KEYGEN:
        keys = tmp_path_factory.mktemp("bundle-keys")
        for name in ("signed", "intruder"):
            made[name] = package_run(run, out / f"{name}.tar.gz", quiet=True,
                                     sign_key=str(_keypair(keys, "release" if name == "signed" else name)))
        made["signers"] = keys / "allowed_signers"
        made["signers"].write_text(f'ci@example.com namespaces="pwdeploy" {(keys / "release.pub").read_text()}')
    return made


def _deploy(tmp_path: Path, bundles) -> Path:
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    shutil.copyfile(bundles["signers"], deploy / "allowed_signers")
    return deploy


def launch(root: Path, *args: str, env=None, isolated: bool = True) -> subprocess.CompletedProcess:
    """The device's command, from inside the bundle: the trust anchor (installed outside the bundle)."""
    anchor = anchor_file(_BASE[0])
    flags = ["-I", "-B"] if isolated else []
    return subprocess.run([sys.executable, *flags, str(anchor), "verify", ".", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


_BASE = []  # the session's temp base, for the anchor file (set by the bundles fixture)


# --- signatures --------------------------------------------------------------------------------------------------

@needs_keygen
def test_signed_bundle_installs_and_the_isolated_verifier_checks_the_signature(bundles, tmp_path):
    deploy = _deploy(tmp_path, bundles)
    lines = []
    result = install(str(bundles["signed"]), str(deploy), log=lines.append)
    assert any("signed by ci@example.com" in line for line in lines)
    proc = launch(Path(result["release"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "signature: good, signed by ci@example.com" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("PASSED")
    verdict = read_json(deploy / ".pwdeploy" / "state" / Path(result["release"]).name / "verify_result.json")
    assert verdict["signature"]["signer"] == "ci@example.com"
    # the device's own output files do not make the release "unlisted" when it is verified again
    assert launch(Path(result["release"])).returncode == 0


@needs_keygen
@pytest.mark.parametrize("which, message", [("unsigned", "is not signed"), ("intruder", "does not list")])
def test_unsigned_or_foreign_signed_bundles_are_refused(bundles, tmp_path, which, message):
    deploy = _deploy(tmp_path, bundles)
    with pytest.raises(InstallError, match=message):
        install(str(bundles[which]), str(deploy), log=lambda _: None)
    assert not (deploy / "releases").exists() and not (deploy / "current").exists()
    # the isolated verifier refuses it too, given the signers file
    root = extract(bundles[which], tmp_path / "x")
    proc = launch(root, "--allowed-signers", str(bundles["signers"]))
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


@needs_keygen
@pytest.mark.parametrize("edit", ["tolerance", "rehashed-model"])
def test_a_bundle_changed_after_signing_is_refused(bundles, tmp_path, edit):
    """The attacker's move: edit the manifest (gate tolerance 1.0 -> 0.0), or change the model and re-hash."""
    root = extract(bundles["signed"], tmp_path / "x")
    if edit == "tolerance":
        manifest = read_json(root / "manifest.json")
        manifest["gate"]["tolerance"] = 0.0
        (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    else:
        damage_classifier(root / "model.onnx")
        rehash(root, ["model.onnx"])
    archive = repack(root, tmp_path / "tampered.tar.gz")
    deploy = _deploy(tmp_path, bundles)
    with pytest.raises(InstallError, match="signature does not match manifest.json"):
        install(str(archive), str(deploy), log=lambda _: None)
    assert not (deploy / "current").exists()
    proc = launch(root, "--allowed-signers", str(bundles["signers"]))
    assert proc.returncode == 2 and "signature does not match" in proc.stderr


@needs_keygen
def test_package_sign_key_errors_are_one_line(bundles, tmp_path, capsys):
    run = tiny_bundle_run(tmp_path)
    assert main(["package", str(run), "-o", str(tmp_path / "b.tar.gz"), "--sign-key", str(tmp_path / "nokey")]) == 2
    err = capsys.readouterr().err
    assert "--sign-key" in err and "not found" in err and "Traceback" not in err
    assert not (tmp_path / "b.tar.gz").exists()


# --- the isolated verifier ---------------------------------------------------------------------------------------

@pytest.fixture()
def unsigned_root(bundles, tmp_path):
    return extract(bundles["unsigned"], tmp_path / "x")


def test_unlisted_module_beside_the_code_is_refused_before_anything_is_imported(unsigned_root, tmp_path):
    marker = tmp_path / "PWNED"
    (unsigned_root / "numpy.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    proc = launch(unsigned_root)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "numpy.py is in the bundle but not listed in its manifest" in proc.stderr
    assert not marker.exists() and "every sha256 matches" not in proc.stdout


def test_a_planted_bytecode_cache_is_refused(unsigned_root):
    cache = unsigned_root / "pwdeploy" / "__pycache__"
    cache.mkdir()
    (cache / f"gate.cpython-{sys.version_info[0]}{sys.version_info[1]}.pyc").write_bytes(b"\x00" * 32)
    proc = launch(unsigned_root)
    assert proc.returncode == 2 and "pwdeploy/__pycache__ is in the bundle but not listed" in proc.stderr


def test_the_launcher_isolates_itself_and_refuses_a_changed_verifier(unsigned_root):
    # run without -I -B: it re-executes itself isolated (so the bundle's code, not the host's, runs)
    proc = launch(unsigned_root, isolated=False)
    assert proc.returncode == 0, proc.stderr
    assert "signature: not checked (no allowed_signers)" in proc.stdout
    assert not list(unsigned_root.rglob("__pycache__"))  # -B: no bytecode written into the release
    # a listed module changed (without re-hashing) is refused before it runs
    gate = unsigned_root / "pwdeploy" / "gate.py"
    gate.write_text(gate.read_text() + "\nraise SystemExit('tampered gate ran')\n")
    proc = launch(unsigned_root)
    assert proc.returncode == 2 and "error: pwdeploy/gate.py has" in proc.stderr and "nothing was run" in proc.stderr
    assert "tampered gate ran" not in proc.stderr + proc.stdout


def test_manifest_per_group_counts_must_match_the_verification_set(unsigned_root):
    from pwdeploy.device.verify import verify_bundle
    from pwdeploy.errors import DataError

    manifest = read_json(unsigned_root / "manifest.json")
    groups = manifest["verification"]["per_group"]
    first, second = list(groups)
    groups[first], groups[second] = groups[first] + 5, groups[second] - 5  # same total, wrong split
    (unsigned_root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="per-group counts"):
        verify_bundle(str(unsigned_root), log=lambda _: None, result_path=None)


# --- install: members against the manifest, before writing -------------------------------------------------------

def _add_member(archive: Path, out: Path, name: str, data: bytes) -> Path:
    with tarfile.open(archive) as src, tarfile.open(out, "w:gz") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo(name)
        info.size = len(data)
        dst.addfile(info, io.BytesIO(data))
    return out


def test_install_refuses_an_unlisted_member_before_writing_a_byte(bundles, tmp_path):
    root_name = tarfile.open(bundles["unsigned"]).getnames()[0]
    archive = _add_member(bundles["unsigned"], tmp_path / "extra.tar.gz", f"{root_name}/numpy.py", b"import os\n")
    deploy = tmp_path / "deploy"
    with pytest.raises(InstallError, match="member numpy.py is not listed in the manifest.*before unpacking"):
        install(str(archive), str(deploy), log=lambda _: None)
    assert not (deploy / "releases").exists()  # nothing was unpacked, not even a staging folder


def test_member_count_cap_stops_reading_early(tmp_path):
    archive = tmp_path / "many.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(MAX_MEMBERS + 50):
            tar.addfile(tarfile.TarInfo(f"b/{i}"), io.BytesIO(b""))
    started = time.time()
    with pytest.raises(UnsafeArchiveError, match=f"more than {MAX_MEMBERS} members"):
        check_archive(str(archive))
    assert time.time() - started < 30


class _Zeros(io.RawIOBase):
    def __init__(self, n):
        self.left = n

    def read(self, size=-1):
        size = self.left if size is None or size < 0 else min(size, self.left)
        self.left -= size
        return b"\0" * size


def test_compression_ratio_cap_refuses_a_zip_bomb(tmp_path):
    archive = tmp_path / "bomb.tar.gz"
    size = 80 << 20  # 80 MB of zeros gzip to ~80 kB: 1000:1
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("b/zeros.bin")
        info.size = size
        tar.addfile(info, _Zeros(size))
    with pytest.raises(UnsafeArchiveError, match="compressed size"):
        check_archive(str(archive))


# --- hostile manifests ---------------------------------------------------------------------------------------------

def test_deeply_nested_manifest_is_a_one_line_error():
    with pytest.raises(ManifestError, match="nested too deeply"):
        parse_manifest(b"[" * 200_000 + b"]" * 200_000)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_gate_values_in_a_manifest_are_refused(unsigned_root, value):
    raw = (unsigned_root / "manifest.json").read_text()
    manifest = json.loads(raw)
    text = raw.replace(f'"tolerance": {manifest["gate"]["tolerance"]}', f'"tolerance": {value}')
    assert text != raw
    with pytest.raises(ManifestError, match="tolerance|not a number JSON allows"):
        parse_manifest(text.encode())


def test_cli_install_of_a_hostile_manifest_exits_2_without_traceback(bundles, tmp_path):
    root = extract(bundles["unsigned"], tmp_path / "x")
    (root / "manifest.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    archive = repack(root, tmp_path / "deep.tar.gz")
    proc = subprocess.run([sys.executable, "-m", "pwdeploy.device", "install", str(archive), str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 2 and "nested too deeply" in proc.stderr and "Traceback" not in proc.stderr


# --- release order ---------------------------------------------------------------------------------------------------

def test_release_order_is_recorded_at_install_not_read_from_folder_times(bundles, tmp_path):
    from pwdeploy.device.install import prune_releases

    archives = [bundles["unsigned"]]
    for step, suffix in enumerate(("b", "c"), 1):
        root = extract(bundles["unsigned"], tmp_path / f"x-{suffix}")
        number = read_json(root / "manifest.json")["release"] + step
        archives.append(repack(root, tmp_path / f"{suffix}.tar.gz", bundle_id=f"{root.name}-{suffix}", release=number))
    deploy = tmp_path / "deploy"
    first, second, third = (install(str(a), str(deploy), keep=0, log=lambda _: None) for a in archives)
    # the oldest release is verified again: its folder becomes the newest by mtime
    (Path(first["release"]) / "manifest.json").touch()
    os.utime(first["release"], (time.time() + 3600,) * 2)
    assert prune_releases(str(deploy), 2, log=lambda _: None) == [os.path.basename(first["release"])]
    assert os.path.isdir(second["release"]) and os.path.isdir(third["release"])
    with pytest.raises(InstallError, match="--keep must be 0"):
        install(str(archives[0]), str(deploy), keep=-1, log=lambda _: None)


# --- fuzz: archives and manifests (seeded generator) -------------------------------------------------------------

_NAME_PARTS = ["a", "b.py", "..", ".", "", "/", "C:", "x\\y", "pwdeploy", "manifest.json", "~", "-rf", "é", "a" * 120]


def _random_archive(rng, path: Path) -> None:
    kinds = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE]
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for _ in range(int(rng.integers(1, 6))):
            parts = [_NAME_PARTS[i] for i in rng.integers(0, len(_NAME_PARTS), int(rng.integers(1, 4)))]
            prefix = "/" if rng.random() < 0.1 else ("bundle/" if rng.random() < 0.7 else "")
            info = tarfile.TarInfo(prefix + "/".join(parts))
            info.type = kinds[int(rng.integers(0, len(kinds)))] if rng.random() < 0.4 else tarfile.REGTYPE
            if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = ["../../etc/passwd", "/etc/passwd", "a", "bundle/a"][int(rng.integers(0, 4))]
            data = bytes(rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8)) \
                if info.type == tarfile.REGTYPE else b""
            info.size = len(data)
            info.mode = int(rng.choice([0o644, 0o755, 0o4755, 0o777]))
            tar.addfile(info, io.BytesIO(data) if data else None)


def test_fuzz_safe_extract_never_writes_outside_its_target(tmp_path):
    from pwdeploy.errors import PwdeployError
    from pwdeploy.safe_extract import safe_extract

    rng = np.random.default_rng(1212)
    outside = tmp_path / "outside"
    outside.mkdir()
    for case in range(150):
        archive = tmp_path / f"f{case}.tar.gz"
        _random_archive(rng, archive)
        if rng.random() < 0.2:  # and some damaged bytes
            data = bytearray(archive.read_bytes())
            for i in rng.integers(0, len(data), int(rng.integers(1, 8))):
                data[int(i)] ^= int(rng.integers(1, 256))
            archive.write_bytes(bytes(data))
        dest = outside / "target" / str(case)
        try:
            names = safe_extract(str(archive), str(dest))
        except PwdeployError:
            assert not dest.exists()  # refused: nothing left behind
            continue
        for path in dest.rglob("*"):
            assert not path.is_symlink() and (path.is_file() or path.is_dir()), path
            assert path.resolve().is_relative_to(dest.resolve())
            if path.is_file():
                assert not path.stat().st_mode & 0o7000  # no setuid/setgid/sticky bits
        assert names
    assert sorted(p.name for p in outside.iterdir()) == ["target"]


def test_fuzz_manifest_validation_only_ever_raises_manifest_error(unsigned_root):
    import copy

    from pwdeploy.manifest import validate_manifest

    good = json.loads((unsigned_root / "manifest.json").read_text())
    hostile = [None, True, -1, 0, 2**70, -1e308, "", "x" * 500, [], {}, [[[[]]]], {"a": {"b": {}}}, 1.5, "../x",
               "/etc/passwd", ["a"] * 3, float("nan"), float("inf")]
    rng = np.random.default_rng(2022)
    outcomes = {"accepted": 0, "refused": 0}
    for _ in range(600):
        data = copy.deepcopy(good)
        for _ in range(int(rng.integers(1, 4))):
            node, key = data, None
            for _depth in range(int(rng.integers(1, 5))):  # walk to a random place: node[key]
                keys = list(node) if isinstance(node, dict) else list(range(len(node)))
                if not keys:
                    break
                key = keys[int(rng.integers(0, len(keys)))]
                child = node[key]
                if not isinstance(child, (dict, list)) or not child or rng.random() < 0.3:
                    break
                node, key = child, None
            if key is None:
                continue
            if isinstance(node, dict) and rng.random() < 0.2:
                del node[key]
            else:
                node[key] = copy.deepcopy(hostile[int(rng.integers(0, len(hostile)))])
        try:
            validate_manifest(data)
            outcomes["accepted"] += 1
        except ManifestError:
            outcomes["refused"] += 1
        raw = json.dumps(data, allow_nan=True).encode()
        cut = raw[:int(rng.integers(0, len(raw) + 1))]
        for blob in (raw, cut):
            try:
                parse_manifest(blob)
            except ManifestError:
                pass
    assert outcomes["refused"] > 400  # most random edits break the schema; none escaped as another exception


def test_python38_runs_the_isolated_preflight(unsigned_root):
    """The device minimum: Python 3.8 re-executes the launcher isolated, refuses an unlisted module, and
    with a clean bundle gets past every check (to numpy, which that interpreter may lack)."""
    from test_device_verify import PY38

    if PY38 is None:
        pytest.skip("no Python 3.8 interpreter here (the device minimum)")
    (unsigned_root / "numpy.py").write_text("raise SystemExit('planted numpy ran')\n")
    proc = subprocess.run([PY38, str(anchor_file(_BASE[0])), "verify", "."], cwd=unsigned_root, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 2 and "numpy.py is in the bundle but not listed" in proc.stderr
    (unsigned_root / "numpy.py").unlink()
    proc = subprocess.run([PY38, str(anchor_file(_BASE[0])), "verify", "."], cwd=unsigned_root, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert "preflight: no unlisted files, every sha256 matches" in proc.stdout, proc.stderr
    assert not list(unsigned_root.rglob("__pycache__"))
