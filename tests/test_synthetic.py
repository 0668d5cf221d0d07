"""The built-in synthetic dataset: deterministic, balanced as designed, cues where the design puts them."""

from __future__ import annotations

import numpy as np
import pytest

from pwdeploy.data import DataSpec, create_dataset
from pwdeploy.data.synthetic import MAJORITY_NO_CUE, MINORITY_NO_CUE, SPLIT_SIZES, generate
from pwdeploy.errors import DataError


def _make(split="train", **options):
    return create_dataset(DataSpec("synthetic", None, options), split)


def _bar_says_class0(images: np.ndarray) -> np.ndarray:
    """Horizontal bar (class 0): some row is much brighter than any column is."""
    gray = images.mean(axis=1)
    return gray.mean(axis=2).max(axis=1) > gray.mean(axis=1).max(axis=1)


def _stripes_say_class0(images: np.ndarray) -> np.ndarray:
    """'/' stripes (class 0) repeat along the (1, -1) diagonal, '\\' stripes along (1, 1)."""
    g = images.mean(axis=1)
    g = g - g.mean(axis=(1, 2), keepdims=True)
    anti = (g[:, 1:, :-1] * g[:, :-1, 1:]).mean(axis=(1, 2))
    main = (g[:, 1:, 1:] * g[:, :-1, :-1]).mean(axis=(1, 2))
    return anti > main


def test_same_options_give_identical_arrays_and_seed_changes_them():
    a, b = _make(n=300, size=16), _make(n=300, size=16)
    assert np.array_equal(a.images, b.images)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.groups, b.groups)
    c = _make(n=300, size=16, seed=1)
    assert not np.array_equal(a.images, c.images)
    # Splits are different draws, not copies of one another.
    assert not np.array_equal(a.images, _make("test", n=300, size=16).images)


def test_defaults_shapes_and_split_sizes():
    train = _make("val")  # the smallest default split keeps this fast
    assert len(train) == SPLIT_SIZES["val"]
    assert train.images.shape[1:] == (3, 24, 24) and train.images.dtype == np.float32
    assert tuple(train.preprocessing.input_shape) == (3, 24, 24)
    assert train.group_names == ["majority", "minority"] and train.class_names == ["class0", "class1"]
    image, label, group = train[0]
    assert tuple(image.shape) == (3, 24, 24) and label in (0, 1) and group in (0, 1)
    assert _make(n=10, size=16).images.shape[1:] == (3, 16, 16)


def test_minority_fraction_and_label_balance_are_as_designed():
    _, labels, groups = generate(6000, seed=5)
    assert abs(groups.mean() - 0.06) < 0.012  # binomial sd 0.003
    for g in (0, 1):
        assert abs(labels[groups == g].mean() - 0.5) < 0.08  # classes balanced within each group
    _, _, groups = generate(2000, minority_fraction=0.3, seed=5)
    assert abs(groups.mean() - 0.3) < 0.04


def test_the_bar_gives_the_majority_label_and_stripes_the_minority_label():
    images, labels, groups = generate(4000, minority_fraction=0.5, seed=3)
    maj, mino = groups == 0, groups == 1
    bar_right = _bar_says_class0(images) == (labels == 0)
    stripes_right = _stripes_say_class0(images) == (labels == 0)
    # Majority: the bar carries the label (up to the 4% without a bar); the stripes are random.
    assert bar_right[maj].mean() > 0.9
    assert abs(stripes_right[maj].mean() - 0.5) < 0.06
    # Minority: the (fainter) bar is random, a misleading cue; the stripes carry the label except for the 15%
    # without stripes, which bounds what any model can reach.
    assert abs(bar_right[mino].mean() - 0.5) < 0.06
    assert 0.75 < stripes_right[mino].mean() <= 1 - MINORITY_NO_CUE / 2 + 0.03
    assert 0 < MAJORITY_NO_CUE < MINORITY_NO_CUE


def test_variants_differ_only_in_the_group_marker():
    colour, labels_c, groups_c = generate(2000, minority_fraction=0.5, variant="colour", seed=9)
    subtle, labels_s, groups_s = generate(2000, minority_fraction=0.5, variant="subtle", seed=9)
    assert np.array_equal(labels_c, labels_s) and np.array_equal(groups_c, groups_s)
    assert not np.array_equal(colour, subtle)
    red_minus_blue = lambda x, g: float((x[groups_c == g, 0] - x[groups_c == g, 2]).mean())  # noqa: E731
    # colour: a tint tells the groups apart; subtle: no colour difference, only a faint checker texture.
    assert red_minus_blue(colour, 1) - red_minus_blue(colour, 0) > 0.15
    assert abs(red_minus_blue(subtle, 1) - red_minus_blue(subtle, 0)) < 0.02
    yy, xx = np.mgrid[0:24, 0:24]
    checker = ((yy + xx) % 2) * 2 - 1
    response = (subtle.mean(axis=1) * checker).mean(axis=(1, 2))
    assert response[groups_s == 1].mean() - response[groups_s == 0].mean() > 0.04
    assert _make(n=20, size=16, variant="subtle").name == "synthetic-subtle"


def test_bad_options_raise_data_errors_that_name_the_fix():
    with pytest.raises(DataError, match="bogus") as info:
        _make(n=10, bogus=1)
    assert "known options" in str(info.value)
    with pytest.raises(DataError, match="colour, subtle"):
        _make(n=10, variant="stripy")
    with pytest.raises(DataError, match="minority_fraction"):
        _make(n=10, minority_fraction=1.5)
    with pytest.raises(DataError, match="size"):
        _make(n=10, size=4)


def test_cli_reports_an_unknown_option_in_one_line(tmp_path, capsys):
    from pwdeploy.cli import main

    code = main(["train", "--out", str(tmp_path / "m.pt"), "--data", "synthetic", "-D", "bogus=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "bogus" in err
    assert not (tmp_path / "m.pt").exists()
