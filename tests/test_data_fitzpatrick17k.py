"""Fitzpatrick17k adapter on a tiny fitzpatrick17k.csv + images/<md5hash>.jpg written like the real one."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from fixtures_data import FITZ_CLASSES, write_corrupt_image, write_fitzpatrick17k
from pwdeploy.data import DataSpec, create_dataset
from pwdeploy.errors import DataError

PER_TYPE, UNKNOWN, MISSING = 16, 3, 4


@pytest.fixture(scope="module")
def fitz_root(tmp_path_factory):
    return write_fitzpatrick17k(tmp_path_factory.mktemp("fitz_data"), per_type=PER_TYPE, unknown_type=UNKNOWN,
                                missing_images=MISSING)


def load(root, split="train", **options):
    options.setdefault("size", 16)
    return create_dataset(DataSpec("fitzpatrick17k", None if root is None else str(root), options), split)


def csv_rows(root):
    with open(root / "fitzpatrick17k.csv", newline="") as f:
        return list(csv.DictReader(f))


def usable_md5s(root, types):
    present = {p.stem for p in (root / "images").iterdir()}
    return {r["md5hash"] for r in csv_rows(root) if int(r["fitzpatrick_scale"]) in types and r["md5hash"] in present}


def md5s(ds):
    return {p.stem for p in ds.paths}


def test_paper_protocol_trains_on_light_and_tests_on_medium_and_dark(fitz_root):
    train, val, test = (load(fitz_root, s) for s in ("train", "val", "test"))
    for ds in (train, val, test):
        assert ds.group_names == ["light", "medium", "dark"]  # same indices in every split
        assert ds.class_names == sorted(FITZ_CLASSES)
    assert md5s(train) == usable_md5s(fitz_root, {1, 2})
    assert train.group_counts()["medium"] == train.group_counts()["dark"] == 0
    assert val.group_counts()["light"] == test.group_counts()["light"] == 0
    assert not md5s(val) & md5s(test)
    assert md5s(val) | md5s(test) == usable_md5s(fitz_root, {3, 4, 5, 6})
    assert 0 < len(val) < len(test)  # a quarter to validation, the rest to test
    assert min(test.group_counts()["medium"], test.group_counts()["dark"]) > 0
    # labels follow the CSV's three_partition_label
    by_md5 = {r["md5hash"]: r["three_partition_label"] for r in csv_rows(fitz_root)}
    assert [test.class_names[y] for y in test.labels] == [by_md5[p.stem] for p in test.paths]
    # types: medium = 3-4, dark = 5-6
    types = {r["md5hash"]: int(r["fitzpatrick_scale"]) for r in csv_rows(fitz_root)}
    for path, g in zip(test.paths, test.groups):
        assert types[path.stem] in ({3, 4} if test.group_names[g] == "medium" else {5, 6})


def test_skipped_rows_are_counted_and_reported(fitz_root):
    ds = load(fitz_root, "test")
    notes = " | ".join(ds.notes)
    assert f"skipped {UNKNOWN} of {6 * PER_TYPE + UNKNOWN + MISSING} rows with unknown Fitzpatrick type" in notes
    assert f"skipped {MISSING} of" in notes and "image is missing" in notes and "images/" in notes
    assert ds.describe()["notes"] == ds.notes


def test_split_is_deterministic_and_stable_when_other_images_go_missing(fitz_root, tmp_path):
    first, second = load(fitz_root, "val"), load(fitz_root, "val")
    assert [p.name for p in first.paths] == [p.name for p in second.paths]
    copy = tmp_path / "copy"
    shutil.copytree(fitz_root, copy)
    test = load(copy, "test")
    gone = test.paths[0].name
    (copy / "images" / gone).unlink()
    # every remaining image keeps its split: a different download of the URLs does not reshuffle
    assert md5s(load(copy, "test")) == md5s(test) - {gone[:-4]}
    assert md5s(load(copy, "val")) == md5s(first)


def test_all_protocol_uses_every_type_in_every_split(fitz_root):
    splits = {s: load(fitz_root, s, protocol="all") for s in ("train", "val", "test")}
    for ds in splits.values():
        assert min(ds.group_counts().values()) > 0
    sets = [md5s(ds) for ds in splits.values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert set().union(*sets) == usable_md5s(fitz_root, {1, 2, 3, 4, 5, 6})
    assert len(splits["train"]) > len(splits["test"]) > len(splits["val"])


def test_label_column_and_paper_layout_and_old_column_name(tmp_path):
    root = write_fitzpatrick17k(tmp_path / "nested", nested=True, per_type=10)
    ds = load(root, "test", label_column="nine_partition_label")  # root is the parent of fitzpatrick17k/
    assert ds.class_names == [f"nine{i}" for i in range(9)]
    with pytest.raises(DataError, match="no column 'diagnosis'.*label_column"):
        load(root, label_column="diagnosis")
    # older copies of the CSV call the type column 'fitzpatrick'
    folder = root / "fitzpatrick17k"
    text = (folder / "fitzpatrick17k.csv").read_text().replace("fitzpatrick_scale", "fitzpatrick", 1)
    (folder / "fitzpatrick17k.csv").write_text(text)
    assert len(load(folder, "train")) == len(load(root, "train"))


def test_png_images_are_accepted(tmp_path, fitz_root):
    from PIL import Image

    copy = tmp_path / "copy"
    shutil.copytree(fitz_root, copy)
    jpg = sorted((copy / "images").iterdir())[0]
    Image.open(jpg).save(jpg.with_suffix(".png"))
    jpg.unlink()
    ds = load(copy, "train")
    assert len(ds) + len(load(copy, "val")) + len(load(copy, "test")) == 6 * PER_TYPE
    assert any(p.suffix == ".png" for s in ("train", "val", "test") for p in load(copy, s).paths)


def test_missing_csv_images_folder_and_bad_options(tmp_path, fitz_root):
    with pytest.raises(DataError, match="needs --data-root"):
        load(None)
    with pytest.raises(DataError, match=r"expected .*fitzpatrick17k/fitzpatrick17k\.csv"):
        load(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(fitz_root, copy)
    shutil.rmtree(copy / "images")
    with pytest.raises(DataError, match=r"expected .*images/<md5hash>\.jpg"):
        load(copy)
    (copy / "images").mkdir()
    with pytest.raises(DataError, match="no usable Fitzpatrick17k rows.*image is missing"):
        load(copy)
    with pytest.raises(DataError, match="protocol 'light'"):
        load(fitz_root, protocol="light")
    with pytest.raises(DataError, match="unknown option.*target_attr"):
        load(fitz_root, target_attr="x")


def test_empty_group_in_a_split_is_an_error_naming_it(tmp_path):
    root = tmp_path / "d"
    write_fitzpatrick17k(root, per_type=6, unknown_type=0, missing_images=0)
    rows = [r for r in csv_rows(root)]
    for r in rows:  # no types 5-6 left: the 'dark' test group is empty
        if r["fitzpatrick_scale"] in ("5", "6"):
            r["fitzpatrick_scale"] = "-1"
    with open(root / "fitzpatrick17k.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert len(load(root, "train")) == 12
    with pytest.raises(DataError, match="group 'dark' has no images in the Fitzpatrick17k test split"):
        load(root, "test")


def test_unreadable_image_error_or_counted_with_skip(tmp_path, fitz_root):
    copy = tmp_path / "copy"
    shutil.copytree(fitz_root, copy)
    train = load(copy, "train")
    write_corrupt_image(train.paths[2])
    with pytest.raises(DataError, match=rf"cannot read image .*{train.paths[2].name}.*--skip-bad-images"):
        load(copy, "train")[2]
    skipped = load(copy, "train", skip_bad_images=True)
    assert len(skipped) == len(train) - 1
    assert any("unreadable" in n and train.paths[2].name in n for n in skipped.notes)
    x, _, _ = skipped[0]
    assert tuple(x.shape) == (3, 16, 16) and np.isfinite(x.numpy()).all()


def test_resize_shorter_then_centre_crop_matches_torchvision(fitz_root):
    """The paper's Resize(250) + CenterCrop(224), scaled down: the recorded transform gives torchvision's pixels."""
    import torch
    from PIL import Image
    from torchvision import transforms

    ds = load(fitz_root, "test", size=16, resize_shorter=18)
    assert ds.preprocessing.resize_shorter == 18 and ds.preprocessing.to_dict()["resize_shorter"] == 18
    reference = transforms.Compose([transforms.Resize(18), transforms.CenterCrop(16), transforms.PILToTensor()])
    for rgb in (Image.open(ds.paths[0]).convert("RGB"), Image.new("RGB", (30, 21), (200, 40, 90))):  # square, wide
        ours = ds.preprocessing.apply_pil(rgb)
        expected = reference(rgb).to(torch.float32).numpy() / 255.0
        mean, std = (np.asarray(v, np.float32)[:, None, None] for v in (ds.preprocessing.mean, ds.preprocessing.std))
        np.testing.assert_allclose(ours, (expected - mean) / std, atol=1e-5)
    assert ds[0][0].shape == (3, 16, 16)
    with pytest.raises(DataError, match="resize_shorter must be an int >= size"):
        load(fitz_root, size=16, resize_shorter=8)
