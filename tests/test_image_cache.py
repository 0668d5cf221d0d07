"""Decoded-image cache (pwdeploy/data/cache.py): miss, hit, stale refusal, rebuild, identical tensors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from fixtures_data import save_image, tinted_image, write_celeba
from pwdeploy.data import DataSpec, create_dataset
from pwdeploy.data.cache import IMAGES, META, ImageCache, use_cache
from pwdeploy.errors import DataError


@pytest.fixture()
def celeba_root(tmp_path):
    return write_celeba(tmp_path / "data", counts=(12, 4, 6), size=(24, 20))


def load(root, split="train", **options):
    return create_dataset(DataSpec("celeba", str(root), {"size": [20, 16], **options}), split)


def test_miss_builds_then_hit_reads_the_same_tensors(celeba_root, tmp_path):
    cache_dir = tmp_path / "cache"
    plain = load(celeba_root)
    cached = load(celeba_root)
    assert ImageCache(cached, cache_dir).status() == "miss"
    assert use_cache(cached, "on", cache_dir) == "built"
    assert cached.cache_file is not None and cached.cache_file.is_file()
    for i in range(len(plain)):
        x, y, g = cached[i]
        assert torch.equal(x, plain[i][0]) and (y, g) == plain[i][1:]

    again = load(celeba_root)  # a later run: no decoding, the same tensors
    assert use_cache(again, "auto", cache_dir) == "hit"
    assert np.array_equal(again.load_image(3), plain.load_image(3))
    meta = json.loads((ImageCache(again, cache_dir).folder / META).read_text())
    assert meta["n"] == len(plain) and meta["preprocessing"]["size"] == [20, 16]
    assert not list(cache_dir.glob(".*partial*"))


def test_augmented_images_match_under_the_same_random_state(celeba_root, tmp_path):
    plain, cached = load(celeba_root, augment=True), load(celeba_root, augment=True)
    use_cache(cached, "on", tmp_path / "cache")
    torch.manual_seed(5)
    a = [plain.load_image(i) for i in range(len(plain))]
    torch.manual_seed(5)
    b = [cached.load_image(i) for i in range(len(cached))]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_other_preprocessing_or_split_is_another_cache(celeba_root, tmp_path):
    cache_dir = tmp_path / "cache"
    use_cache(load(celeba_root), "on", cache_dir)
    assert use_cache(load(celeba_root, size=[12, 12]), "on", cache_dir) == "built"
    assert use_cache(load(celeba_root, "test"), "on", cache_dir) == "built"
    assert len([p for p in cache_dir.iterdir() if (p / IMAGES).is_file()]) == 3


def test_stale_cache_is_refused_then_rebuilt(celeba_root, tmp_path):
    cache_dir = tmp_path / "cache"
    use_cache(load(celeba_root), "on", cache_dir)
    ds = load(celeba_root)
    edited = ds.paths[2]
    save_image(tinted_image(np.random.default_rng(9), 1, 24, 20), edited)
    os.utime(edited, ns=(1, 1))  # the edit must show even on a coarse-mtime filesystem
    with pytest.raises(DataError, match=r"stale.*--image-cache rebuild"):
        use_cache(load(celeba_root), "auto", cache_dir)
    rebuilt = load(celeba_root)
    assert use_cache(rebuilt, "rebuild", cache_dir) == "built"
    assert np.array_equal(rebuilt.load_image(2), load(celeba_root).load_image(2))
    assert use_cache(load(celeba_root), "on", cache_dir) == "hit"


def test_off_and_in_memory_datasets_are_left_alone(celeba_root, tmp_path):
    ds = load(celeba_root)
    assert use_cache(ds, "off", tmp_path / "cache") == "off" and ds.cache_file is None
    synthetic = create_dataset(DataSpec("synthetic", None, {"size": 12, "n": 40}), "train")
    assert use_cache(synthetic, "on", tmp_path / "cache") == "not applicable"
    assert not (tmp_path / "cache").exists()


def test_cached_dataset_pickles_without_its_memory_map(celeba_root, tmp_path):
    """DataLoader workers (spawned or forked) re-open the cache instead of copying it."""
    import pickle

    ds = load(celeba_root)
    use_cache(ds, "on", tmp_path / "cache")
    ds.load_image(0)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._cache is None and np.array_equal(clone.load_image(1), ds.load_image(1))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1)
    assert torch.equal(next(iter(loader))[0], torch.stack([ds[i][0] for i in range(4)]))


def test_cli_stale_cache_is_one_line_exit_2(celeba_root, tmp_path, capsys):
    from pwdeploy.cli import main

    cache_dir = tmp_path / "cache"
    for split in ("train", "test"):
        use_cache(load(celeba_root, split, size=16), "on", cache_dir)
    path = load(celeba_root).paths[0]
    save_image(tinted_image(np.random.default_rng(3), 0, 24, 20), path)
    os.utime(path, ns=(1, 1))
    code = main(["train", "--out", str(tmp_path / "m.pt"), "--data", "celeba", "--data-root", str(celeba_root),
                 "-D", "size=16", "--epochs", "1", "--device", "cpu", "--cache-dir", str(cache_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "stale" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m.pt").exists()


def test_training_batches_are_the_same_tensors_with_and_without_the_cache(celeba_root, tmp_path):
    """Loaders batch uint8 images and normalise them on the device: the values are load_image's."""
    from pwdeploy.train import make_loader, model_input

    plain, cached = load(celeba_root), load(celeba_root)
    use_cache(cached, "on", tmp_path / "cache")
    cpu = torch.device("cpu")
    batches = []
    for ds in (plain, cached):
        loader = make_loader(ds, 4, shuffle=True, seed=1, drop_last=True)
        x, y, g, idx = next(iter(loader))
        assert loader.dataset.uint8 and x.dtype == torch.uint8
        batches.append((model_input(loader, cpu)(x), idx))
    (a, ia), (b, ib) = batches
    assert torch.equal(ia, ib) and torch.equal(a, b)
    assert torch.equal(a, torch.stack([plain[int(i)][0] for i in ia]))


def test_unwritable_cache_dir_is_an_error_naming_the_fix_or_skipped_in_auto(celeba_root, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")  # the cache folder cannot be created below a file
    with pytest.raises(DataError, match="--cache-dir"):
        use_cache(load(celeba_root), "on", blocked / "cache")
    ds = load(celeba_root)
    assert use_cache(ds, "auto", blocked / "cache") == "off" and ds.cache_file is None
