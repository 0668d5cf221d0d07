"""The two host caches have distinct, self-explaining variables; the old names still work and say what to use."""

from __future__ import annotations

from pathlib import Path

import pytest

from pwdeploy.cache_dirs import image_cache_dir, latency_cache_dir

ALL = ("PWDEPLOY_IMAGE_CACHE_DIR", "PWDEPLOY_LATENCY_CACHE_DIR", "PWDEPLOY_CACHE_DIR", "PWDEPLOY_CACHE")


@pytest.fixture
def clean_env(monkeypatch):
    for name in ALL:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/home/someone")
    return monkeypatch


def test_defaults_live_under_one_home_cache(clean_env):
    assert image_cache_dir() == Path("/home/someone/.cache/pwdeploy/images")
    assert latency_cache_dir() == Path("/home/someone/.cache/pwdeploy/latency")


def test_new_names_move_each_cache(clean_env, tmp_path):
    clean_env.setenv("PWDEPLOY_IMAGE_CACHE_DIR", str(tmp_path / "img"))
    clean_env.setenv("PWDEPLOY_LATENCY_CACHE_DIR", str(tmp_path / "lat"))
    assert image_cache_dir() == tmp_path / "img" and latency_cache_dir() == tmp_path / "lat"


def test_old_names_keep_their_meaning_and_warn(clean_env, tmp_path):
    clean_env.setenv("PWDEPLOY_CACHE_DIR", str(tmp_path / "img"))  # was the image folder itself
    clean_env.setenv("PWDEPLOY_CACHE", str(tmp_path / "root"))  # was a root holding latency/
    with pytest.warns(FutureWarning, match=r"\$PWDEPLOY_CACHE_DIR is deprecated: set \$PWDEPLOY_IMAGE_CACHE_DIR"):
        assert image_cache_dir() == tmp_path / "img"
    with pytest.warns(FutureWarning, match=r"\$PWDEPLOY_CACHE is deprecated: set \$PWDEPLOY_LATENCY_CACHE_DIR"):
        assert latency_cache_dir() == tmp_path / "root" / "latency"


def test_new_name_wins_over_old_without_warning(clean_env, tmp_path, recwarn):
    clean_env.setenv("PWDEPLOY_CACHE_DIR", str(tmp_path / "old"))
    clean_env.setenv("PWDEPLOY_IMAGE_CACHE_DIR", str(tmp_path / "new"))
    assert image_cache_dir() == tmp_path / "new"
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]
