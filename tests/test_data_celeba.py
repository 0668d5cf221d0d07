"""CelebA adapter on a tiny dataset written in torchvision's CelebA layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures_data import CELEBA_ATTRS, write_celeba, write_corrupt_image
from pwdeploy.data import DataSpec, create_dataset
from pwdeploy.errors import DataError

COUNTS = (40, 16, 24)


@pytest.fixture(scope="module")
def celeba_root(tmp_path_factory):
    return write_celeba(tmp_path_factory.mktemp("celeba_data"), counts=COUNTS)


def load(root, split="train", **options):
    return create_dataset(DataSpec("celeba", None if root is None else str(root), options), split)


def read_attr_table(root):
    lines = (root / "celeba" / "list_attr_celeba.txt").read_text().splitlines()
    names = lines[1].split()
    rows = {parts[0]: [int(v) for v in parts[1:]] for parts in (line.split() for line in lines[2:])}
    return names, rows


def test_official_partitions_labels_and_groups(celeba_root):
    names, table = read_attr_table(celeba_root)
    partitions = dict(line.split() for line in (celeba_root / "celeba" / "list_eval_partition.txt").read_text().splitlines())
    for split, code, count in (("train", "0", COUNTS[0]), ("val", "1", COUNTS[1]), ("test", "2", COUNTS[2])):
        ds = load(celeba_root, split, size=32)
        assert len(ds) == count
        assert ds.class_names == ["not_blond_hair", "blond_hair"]
        assert ds.group_names == ["male", "female"]
        for path, label, group in zip(ds.paths, ds.labels, ds.groups):
            assert partitions[path.name] == code
            row = table[path.name]
            assert label == (row[names.index("Blond_Hair")] == 1)
            assert group == (0 if row[names.index("Male")] == 1 else 1)
        assert min(ds.group_counts().values()) > 0
        assert ds.notes == []


def test_root_may_be_the_celeba_folder_or_its_parent(celeba_root):
    a, b = load(celeba_root, "test", size=16), load(celeba_root / "celeba", "test", size=16)
    assert [p.name for p in a.paths] == [p.name for p in b.paths]
    assert np.array_equal(a.labels, b.labels)


def test_images_decode_lazily_with_the_recorded_preprocessing(celeba_root):
    ds = load(celeba_root, "val", size=[40, 32])
    prep = ds.preprocessing
    assert prep.size == (40, 32) and prep.mean == (0.485, 0.456, 0.406) and prep.std == (0.229, 0.224, 0.225)
    image, label, group = ds[3]
    assert tuple(image.shape) == (3, 40, 32) and image.dtype == torch.float32
    # the same recorded transform applied to the file by anyone (verifier, device) gives the same tensor
    expected = prep.apply_pil(Image.open(ds.paths[3]))
    assert np.array_equal(image.numpy(), expected)
    assert (label, group) == (int(ds.labels[3]), int(ds.groups[3]))


def test_augment_flips_training_images_only(celeba_root):
    ds = load(celeba_root, "train", size=16, augment=True)
    assert ds.augment
    plain = ds.preprocessing.apply_pil(Image.open(ds.paths[0]))
    flipped = plain[:, :, ::-1]
    outputs = [ds.load_image(0) for _ in range(30)]
    assert all(np.array_equal(o, plain) or np.allclose(o, flipped, atol=1e-6) for o in outputs)
    assert {bool(np.array_equal(o, plain)) for o in outputs} == {True, False}  # sometimes flipped, sometimes not
    assert not load(celeba_root, "test", size=16, augment=True).augment


def test_other_target_and_group_attributes(celeba_root):
    ds = load(celeba_root, "train", size=16, target_attr="Smiling", group_attr="Eyeglasses")
    names, table = read_attr_table(celeba_root)
    assert ds.class_names == ["not_smiling", "smiling"]
    assert ds.group_names == ["eyeglasses", "not_eyeglasses"]
    smiling = [table[p.name][names.index("Smiling")] == 1 for p in ds.paths]
    assert ds.labels.tolist() == [int(s) for s in smiling]
    assert load(celeba_root, "train", size=16, group_attr="Young").group_names == ["young", "old"]


def test_unknown_attribute_lists_the_real_ones(celeba_root):
    with pytest.raises(DataError, match=r"no attribute 'Blonde'.*Blond_Hair"):
        load(celeba_root, target_attr="Blonde")
    with pytest.raises(DataError, match=r"--group-attr"):
        load(celeba_root, group_attr="Gender")
    assert len(CELEBA_ATTRS) == 40


def test_missing_root_and_files_name_the_expected_path(tmp_path):
    with pytest.raises(DataError, match="needs --data-root"):
        load(None)
    with pytest.raises(DataError, match="data root not found"):
        load(tmp_path / "nope")
    with pytest.raises(DataError, match=r"expected .*celeba/list_attr_celeba\.txt.*img_align_celeba"):
        load(tmp_path)
    root = write_celeba(tmp_path / "d", counts=(4, 2, 2))
    (root / "celeba" / "list_eval_partition.txt").unlink()
    with pytest.raises(DataError, match=r"list_eval_partition\.txt"):
        load(root)


def test_malformed_annotation_rows_name_the_line(tmp_path):
    root = write_celeba(tmp_path, counts=(4, 2, 2))
    attr = root / "celeba" / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    lines[4] = lines[4].replace(" 1", " 7", 1)
    attr.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 5"):
        load(root)


def test_missing_image_is_an_error_unless_skipped_and_counted(tmp_path):
    root = write_celeba(tmp_path, counts=(12, 4, 6))
    (root / "celeba" / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(DataError, match=r"000002\.jpg.*--skip-bad-images"):
        load(root, "train")
    ds = load(root, "train", size=16, skip_bad_images=True)
    assert len(ds) == 11
    assert any("skipped 1 of 12" in n and "000002.jpg" in n for n in ds.notes)


def test_unreadable_image_fails_naming_the_file_or_is_counted_with_skip(tmp_path):
    root = write_celeba(tmp_path, counts=(12, 4, 6))
    bad = root / "celeba" / "img_align_celeba" / "000003.jpg"
    write_corrupt_image(bad)
    ds = load(root, "train", size=16)
    index = [p.name for p in ds.paths].index("000003.jpg")
    with pytest.raises(DataError, match=r"cannot read image .*000003\.jpg.*--skip-bad-images"):
        ds[index]
    skipped = load(root, "train", size=16, skip_bad_images=True)
    assert len(skipped) == 11 and "000003.jpg" not in [p.name for p in skipped.paths]
    assert any("unreadable" in n and "000003.jpg" in n for n in skipped.notes)


def test_unknown_option_is_named(celeba_root):
    with pytest.raises(DataError, match="unknown option.*variant"):
        load(celeba_root, variant="shortcut")
    with pytest.raises(DataError, match="size"):
        load(celeba_root, size="big")


def test_torchvision_celeba_rejects_such_a_copy_which_is_why_pwdeploy_reads_the_files(celeba_root):
    import torchvision

    with pytest.raises(RuntimeError, match="not found or corrupted"):
        torchvision.datasets.CelebA(str(celeba_root), split="train", download=False)


def test_cli_maps_celeba_flags_and_reports_bad_data_in_one_line(celeba_root, tmp_path, capsys):
    from pwdeploy.cli import _data_overrides, main

    overrides = _data_overrides("celeba", "/data", ["size=64"], target_attr="Smiling", group_attr="Young",
                                skip_bad_images=True)
    assert overrides == {"data": {"name": "celeba", "root": "/data", "options": {
        "size": 64, "target_attr": "Smiling", "group_attr": "Young", "skip_bad_images": True}}}
    assert "skip_bad_images" not in _data_overrides("csv", None, None).get("data", {}).get("options", {})

    code = main(["train", "--out", str(tmp_path / "m.pt"), "--data", "celeba", "--data-root", str(celeba_root),
                 "--target-attr", "Blonde", "--arch", "smallcnn", "--epochs", "1", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error:") and "Blonde" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m.pt").exists()
