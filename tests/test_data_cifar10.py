"""CIFAR-10 adapter on tiny batch files written in torchvision's cifar-10-batches-py format."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from fixtures_data import CIFAR_CLASSES, write_cifar10
from pwdeploy.data import DataSpec, create_dataset
from pwdeploy.data.cifar10 import MEAN, SQUARE_COLOUR, SQUARE_SIZE, STD
from pwdeploy.errors import DataError

PER_BATCH, TEST = 60, 100


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    return write_cifar10(tmp_path_factory.mktemp("cifar_data"), per_batch=PER_BATCH, test=TEST)


def load(root, split="train", **options):
    return create_dataset(DataSpec("cifar10", None if root is None else str(root), options), split)


def raw_batch(root, name):
    with open(root / "cifar-10-batches-py" / name, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    return d[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(d[b"labels"])


def all_training(root):
    parts = [raw_batch(root, f"data_batch_{i}") for i in range(1, 6)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def normalise(hwc):
    return ((hwc.astype(np.float32) / 255.0 - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)).transpose(2, 0, 1)


def test_standard_splits_classes_and_groups(cifar_root):
    train, val, test = (load(cifar_root, s) for s in ("train", "val", "test"))
    assert train.class_names == CIFAR_CLASSES and train.group_names == CIFAR_CLASSES
    assert len(train) + len(val) == 5 * PER_BATCH and len(test) == TEST
    assert val.group_counts() == {c: 3 for c in CIFAR_CLASSES}  # 10% of each class, held out
    assert np.array_equal(train.groups, train.labels)
    assert train.preprocessing.size == (32, 32) and train.preprocessing.mean == MEAN


def test_images_match_the_batch_files_and_val_is_disjoint_and_deterministic(cifar_root):
    images, labels = all_training(cifar_root)
    test_images, test_labels = raw_batch(cifar_root, "test_batch")
    test = load(cifar_root, "test")
    assert np.array_equal(test.labels, test_labels)
    x, y, g = test[7]
    np.testing.assert_allclose(x.numpy(), normalise(test_images[7]), atol=1e-6)
    assert x.dtype == torch.float32 and y == test_labels[7] == g

    def keys(ds):
        return {ds.images[i].tobytes() for i in range(len(ds))}

    train, val = load(cifar_root, "train"), load(cifar_root, "val")
    assert not keys(train) & keys(val)
    assert keys(train) | keys(val) == {im.tobytes() for im in images}
    assert keys(load(cifar_root, "val")) == keys(val)  # the same hold-out every time


def test_size_option_resizes_with_the_recorded_transform(cifar_root):
    ds = load(cifar_root, "test", size=48)
    from PIL import Image

    assert tuple(ds[0][0].shape) == (3, 48, 48)
    np.testing.assert_array_equal(ds.load_image(0), ds.preprocessing.apply_pil(Image.fromarray(ds.images[0])))


def test_augmentation_crops_and_flips_training_images_only(cifar_root):
    ds = load(cifar_root, "train", augment=True)
    assert ds.augment and not load(cifar_root, "test", augment=True).augment
    outputs = [ds.load_image(0) for _ in range(20)]
    assert all(o.shape == (3, 32, 32) for o in outputs)
    assert len({o.tobytes() for o in outputs}) > 1
    np.testing.assert_allclose(load(cifar_root, "train").load_image(0), normalise(ds.images[0]), atol=1e-6)


def test_imbalanced_keeps_a_fifth_of_cats_and_dogs(cifar_root):
    _, labels = all_training(cifar_root)
    per_class = np.bincount(labels, minlength=10)
    train, val = load(cifar_root, "train", variant="imbalanced"), load(cifar_root, "val", variant="imbalanced")
    kept = np.bincount(train.labels, minlength=10) + np.bincount(val.labels, minlength=10)
    for c, name in enumerate(CIFAR_CLASSES):
        expected = round(0.2 * per_class[c]) if name in ("cat", "dog") else per_class[c]
        assert kept[c] == expected, name
    assert min(val.group_counts().values()) >= 1
    test = load(cifar_root, "test", variant="imbalanced")
    assert np.bincount(test.labels, minlength=10).tolist() == [TEST // 10] * 10  # test untouched


def test_shortcut_square_on_dogs_in_training_and_half_the_test_images(cifar_root):
    train = load(cifar_root, "train", variant="shortcut")
    assert train.group_names == ["clean", "with_square"]
    dog = CIFAR_CLASSES.index("dog")
    marked = train.groups == 1
    assert marked[train.labels == dog].mean() >= 0.9   # 98% of dogs
    assert marked[train.labels != dog].mean() <= 0.1   # 2% of the others
    test = load(cifar_root, "test", variant="shortcut")
    assert test.group_counts() == {"clean": TEST // 2, "with_square": TEST // 2}
    assert len(set(test.labels[test.groups == 1].tolist())) > 5  # every kind of image, not only dogs

    i = int(np.flatnonzero(test.groups == 1)[0])
    r, c = test.squares[i]
    image = test.load_image(i)
    yellow = normalise(np.full((1, 1, 3), SQUARE_COLOUR, np.uint8))[:, 0, 0]
    np.testing.assert_allclose(image[:, r:r + SQUARE_SIZE, c:c + SQUARE_SIZE],
                               np.broadcast_to(yellow[:, None, None], (3, SQUARE_SIZE, SQUARE_SIZE)), atol=1e-5)
    j = int(np.flatnonzero(test.groups == 0)[0])
    np.testing.assert_allclose(test.load_image(j), normalise(test.images[j]), atol=1e-6)
    # fixed per image: the same images carry the same square every time
    assert np.array_equal(load(cifar_root, "test", variant="shortcut").squares, test.squares)


def test_python3_pickles_with_str_keys_also_load(tmp_path, cifar_root):
    import shutil

    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(cifar_root / "cifar-10-batches-py", folder)
    with open(folder / "test_batch", "rb") as f:
        d = pickle.load(f, encoding="bytes")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({k.decode(): v for k, v in d.items()}, f)
    assert len(load(folder, "test")) == TEST  # root pointing at the batches folder itself


def test_missing_root_files_and_unextracted_archive(tmp_path, cifar_root):
    import shutil

    with pytest.raises(DataError, match="needs --data-root"):
        load(None)
    with pytest.raises(DataError, match="data root not found"):
        load(tmp_path / "nope")
    with pytest.raises(DataError, match=r"expected .*cifar-10-batches-py/batches\.meta"):
        load(tmp_path)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(DataError, match="not extracted"):
        load(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(cifar_root, copy)
    (copy / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"data_batch_3"):
        load(copy, "train")
    assert len(load(copy, "test")) == TEST  # the test split does not need the training batches


def test_corrupt_and_malicious_batches_are_refused(tmp_path, cifar_root):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(cifar_root, copy)
    batch = copy / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match=r"cannot read .*test_batch"):
        load(copy, "test")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    batch.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match=r"test_batch.*refusing to load (__builtin__|builtins)\.print"):
        load(copy, "test")

    batch.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2))
    with pytest.raises(DataError, match=r"test_batch.*N x 3072"):
        load(copy, "test")
    batch.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}, protocol=2))
    with pytest.raises(DataError, match=r"label 12"):
        load(copy, "test")


def test_bad_options_are_named(cifar_root):
    with pytest.raises(DataError, match="variant 'tiny'"):
        load(cifar_root, variant="tiny")
    with pytest.raises(DataError, match="unknown option.*target_attr"):
        load(cifar_root, target_attr="Smiling")
    with pytest.raises(DataError, match="val_fraction"):
        load(cifar_root, val_fraction=1.5)
    with pytest.raises(DataError, match="val split is empty"):
        load(cifar_root, "val", val_fraction=0)


def test_torchvision_cifar10_rejects_such_a_copy_which_is_why_pwdeploy_reads_the_files(cifar_root):
    import torchvision

    with pytest.raises(RuntimeError, match="not found or corrupted"):
        torchvision.datasets.CIFAR10(str(cifar_root), train=True, download=False)
