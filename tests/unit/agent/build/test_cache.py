"""Build cache keys and the cache file."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.build.cache import BuildCache, cache_key

pytestmark = pytest.mark.unit


def test_key_depends_on_each_input() -> None:
    base = cache_key(parent="sha256:a", instruction="RUN x", sources="", build_args={"A": "1"})
    assert base == cache_key(parent="sha256:a", instruction="RUN x", build_args={"A": "1"})
    assert base != cache_key(parent="sha256:b", instruction="RUN x", build_args={"A": "1"})
    assert base != cache_key(parent="sha256:a", instruction="RUN y", build_args={"A": "1"})
    assert base != cache_key(parent="sha256:a", instruction="RUN x", build_args={"A": "2"})
    assert base != cache_key(parent="sha256:a", instruction="RUN x", sources="sha256:s")
    assert cache_key(parent="p", instruction="i", build_args={"A": "1", "B": "2"}) == cache_key(
        parent="p", instruction="i", build_args={"B": "2", "A": "1"}
    )


def test_entries_only_while_the_image_exists(tmp_path: Path) -> None:
    live = {"sha256:img"}
    cache = BuildCache(tmp_path / "build" / "cache.json", exists=lambda i: i in live)
    assert cache.get("k") is None
    cache.put("k", "sha256:img")
    again = BuildCache(tmp_path / "build" / "cache.json", exists=lambda i: i in live)
    assert again.get("k") == "sha256:img"
    live.clear()
    assert again.get("k") is None


def test_corrupt_file_is_an_empty_cache(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    path.write_text("{not json")
    cache = BuildCache(path, exists=lambda i: True)
    assert cache.get("k") is None
    cache.put("k", "v")
    assert cache.get("k") == "v"
