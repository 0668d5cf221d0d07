"""Generic CSV manifest adapter (path,label,group,split), its bad-data errors, and a full train + compress
through the CLI on a tiny manifest dataset."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures_data import read_manifest_rows, write_corrupt_image, write_csv_manifest, write_manifest
from pwdeploy.data import DataSpec, create_dataset
from pwdeploy.errors import DataError


@pytest.fixture(scope="module")
def csv_root(tmp_path_factory):
    return write_csv_manifest(tmp_path_factory.mktemp("csv_data"), n=120, size=(16, 16))


def load(root, split="train", **options):
    options.setdefault("size", 16)
    return create_dataset(DataSpec("csv", None if root is None else str(root), options), split)


def rewrite(root, edit):
    """Copy of the manifest rows, changed by ``edit(rows)``, written back."""
    rows = read_manifest_rows(root / "manifest.csv")
    changed = edit(rows)
    rows = rows if changed is None else changed
    write_manifest(root / "manifest.csv", rows, columns=list(rows[0]) if rows else ("path", "label", "group", "split"))


@pytest.fixture
def own_root(tmp_path):
    return write_csv_manifest(tmp_path / "d", n=40, size=(8, 8))


def test_splits_labels_groups_and_relative_paths(csv_root):
    rows = read_manifest_rows(csv_root / "manifest.csv")
    for split in ("train", "val", "test"):
        ds = load(csv_root, split)
        expected = [r for r in rows if r["split"] == split]
        assert len(ds) == len(expected)
        assert ds.class_names == ["cat", "dog"] and ds.group_names == ["a", "b"]
        assert [ds.class_names[y] for y in ds.labels] == [r["label"] for r in expected]
        assert [ds.group_names[g] for g in ds.groups] == [r["group"] for r in expected]
        assert [p for p in ds.paths] == [csv_root / r["path"] for r in expected]
    ds = load(csv_root, "test")
    x, y, g = ds[1]
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, 16, 16)
    np.testing.assert_array_equal(x.numpy(), ds.preprocessing.apply_pil(Image.open(ds.paths[1])))


def test_root_may_be_the_manifest_file_and_options_order_names(csv_root):
    by_file = load(csv_root / "manifest.csv", "val")
    assert len(by_file) == len(load(csv_root, "val"))
    ordered = load(csv_root, "val", classes=["dog", "cat"], groups=["b", "a"])
    plain = load(csv_root, "val")
    assert ordered.class_names == ["dog", "cat"] and ordered.group_names == ["b", "a"]
    assert np.array_equal(ordered.labels, 1 - plain.labels) and np.array_equal(ordered.groups, 1 - plain.groups)
    custom = load(csv_root, "val", size=[12, 10], mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    assert custom.preprocessing.size == (12, 10) and custom.preprocessing.std == (0.25, 0.25, 0.25)
    assert tuple(custom[0][0].shape) == (3, 12, 10)


def test_integer_labels_and_absolute_paths(tmp_path):
    root = write_csv_manifest(tmp_path / "ints", n=30, size=(8, 8), label_style="ints")
    rewrite(root, lambda rows: [dict(r, path=str(root / r["path"])) if i % 2 else r for i, r in enumerate(rows)])
    ds = load(root, "train")
    assert ds.class_names == ["class0", "class1"]
    assert set(ds.labels.tolist()) == {0, 1}
    assert all(p.is_file() for p in ds.paths)
    assert load(root, "train", classes=["no", "yes"]).class_names == ["no", "yes"]


@pytest.mark.parametrize("edit, message", [
    (lambda rows: [{k: v for k, v in r.items() if k != "group"} for r in rows], r"no column 'group'"),
    (lambda rows: [dict(r, split="validation") if i == 3 else r for i, r in enumerate(rows)],
     r"line 5: split 'validation' must be one of train, val, test"),
    (lambda rows: [dict(r, label="7") if i == 2 else r for i, r in enumerate(rows)],
     r"line 4: label '7' is an index but others are names"),
    (lambda rows: [dict(r, label="") if i == 0 else r for i, r in enumerate(rows)], r"line 2: empty 'label'"),
    (lambda rows: [r for r in rows if r["split"] != "val"], r"no rows with split 'val'"),
    (lambda rows: [r for r in rows if not (r["split"] == "test" and r["group"] == "b")],
     r"group 'b' has no images in the test split"),
    (lambda rows: [], r"no rows"),
])
def test_bad_manifests_fail_in_one_line_naming_the_problem(own_root, edit, message):
    rewrite(own_root, edit)
    with pytest.raises(DataError, match=message) as info:
        load(own_root, "train")
    assert "\n" not in str(info.value)


def test_labels_outside_the_declared_classes_and_undeclared_groups(own_root):
    with pytest.raises(DataError, match=r"label 'dog' .* not one of the classes cat, bird"):
        load(own_root, classes=["cat", "bird"])
    with pytest.raises(DataError, match=r"group 'b' is not one of the declared groups a"):
        load(own_root, groups=["a"])
    rewrite(own_root, lambda rows: [dict(r, label="-1" if i == 5 else str(i % 2)) for i, r in enumerate(rows)])
    with pytest.raises(DataError, match=r"line 7: label -1 is negative"):
        load(own_root)
    with pytest.raises(DataError, match=r"label '-1' .* not one of the classes"):
        load(own_root, classes=["x", "y"])


def test_missing_root_manifest_and_bad_options(tmp_path, csv_root):
    with pytest.raises(DataError, match="needs --data-root"):
        load(None)
    with pytest.raises(DataError, match="data root not found"):
        load(tmp_path / "nope")
    with pytest.raises(DataError, match=r"manifest not found: expected .*manifest\.csv with columns path,label,group,split"):
        load(tmp_path)
    with pytest.raises(DataError, match="unknown option.*variant"):
        load(csv_root, variant="x")
    with pytest.raises(DataError, match="option mean must be three numbers"):
        load(csv_root, mean=[0.5])
    with pytest.raises(DataError, match="option size"):
        load(csv_root, size=[0, 4])


def test_missing_image_error_or_counted_with_skip(own_root):
    rows = read_manifest_rows(own_root / "manifest.csv")
    train_paths = [r["path"] for r in rows if r["split"] == "train"]
    (own_root / train_paths[1]).unlink()
    write_corrupt_image(own_root / train_paths[2])
    with pytest.raises(DataError, match=rf"not found, e\.g\. .*{train_paths[1]}.*--skip-bad-images"):
        load(own_root, "train")
    missing = own_root / train_paths[1]
    shutil.copy(own_root / train_paths[0], missing)
    with pytest.raises(DataError, match=rf"cannot read image .*{train_paths[2]}.*--skip-bad-images"):
        load(own_root, "train")[2]  # found only when decoded: construction does not decode every image
    missing.unlink()
    ds = load(own_root, "train", skip_bad_images=True)
    assert len(ds) == len(train_paths) - 2
    notes = " | ".join(ds.notes)
    assert "skipped 1 of" in notes and "not found" in notes and "unreadable" in notes
    assert len(load(own_root, "test")) > 0  # other splits are unaffected


def test_cli_bad_data_exits_2_with_one_line(tmp_path, capsys):
    from pwdeploy.cli import main

    root = write_csv_manifest(tmp_path / "d", n=20, size=(8, 8))
    rewrite(root, lambda rows: [dict(r, split="holdout") if i == 0 else r for i, r in enumerate(rows)])
    code = main(["train", "--out", str(tmp_path / "m.pt"), "--data", "csv", "--data-root", str(root),
                 "--arch", "smallcnn", "--epochs", "1", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "manifest.csv line 2: split 'holdout'" in err


def test_train_and_compress_end_to_end_on_a_csv_dataset(tmp_path, csv_root, capsys):
    """The full main job on the user-data adapter: train a tiny model, compress it, check the run."""
    pytest.importorskip("pwdeploy.api")
    from pwdeploy.cli import main

    torch.set_num_threads(1)
    config = tmp_path / "mine.yaml"
    config.write_text("pw:\n  default: {gamma: 2.0, min_weight: 0.6}\nretrain:\n  batch_size: 32\n")
    common = ["--data", "csv", "--data-root", str(csv_root), "-D", "size=16", "--device", "cpu", "--seed", "0"]
    model = tmp_path / "model.pt"
    assert main(["train", "--out", str(model), "--arch", "smallcnn", "--epochs", "1", "--batch-size", "32",
                 *common]) == 0
    run = tmp_path / "runs" / "csv"
    code = main(["compress", str(model), "--out", str(run), "--method", "magnitude", "--flops-reduction", "0.5",
                 "--epochs", "1", "--config", str(config), *common])
    assert code == 0, capsys.readouterr().err
    for name in ("config.json", "report.json", "model.onnx", "original.onnx", "pruned.pt", "original.pt", ".complete"):
        assert (run / name).is_file(), name

    cfg = json.loads((run / "config.json").read_text())
    # merged: defaults < --config file < flags
    assert cfg["data"] == {"name": "csv", "root": str(csv_root), "options": {"size": 16}}
    assert cfg["pw"]["default"]["gamma"] == 2.0 and cfg["pw"]["default"]["min_weight"] == 0.6
    assert cfg["retrain"]["batch_size"] == 32 and cfg["retrain"]["epochs"] == 1
    assert cfg["prune"]["method"] == "magnitude" and cfg["prune"]["flops_reduction"] == 0.5
    assert cfg["input_shape"] == [3, 16, 16]

    report = json.loads((run / "report.json").read_text())
    # what the data turned out to be is the report's (one home per fact: pwdeploy.rundir)
    assert report["preprocessing"]["size"] == [16, 16]
    assert report["group_names"] == ["a", "b"] and report["class_names"] == ["cat", "dog"]
    test_counts = load(csv_root, "test").group_counts()
    for stage in ("original", "pruned"):
        groups = report["metrics"][stage]["groups"]
        assert {g: groups[g]["n"] for g in groups} == test_counts
        assert all(0.0 <= groups[g]["accuracy"] <= 100.0 for g in groups)
    assert report["flops_reduction"] > 0.3
    assert report["macs"]["pruned"] < report["macs"]["original"]
