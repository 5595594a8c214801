"""The content-addressed blob store."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from agent.images.blobs import BlobStore, Digest, parse_digest
from api.errors import InvalidArgument, NotFound

pytestmark = pytest.mark.unit


def digest_of(data: bytes) -> Digest:
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def files_in(store: BlobStore) -> list[str]:
    return sorted(os.listdir(store.root / "sha256"))


def test_put_stores_under_the_content_digest(store: BlobStore) -> None:
    data = os.urandom(3 << 20)
    desc = store.put(io.BytesIO(data))
    assert desc.digest == digest_of(data)
    assert desc.size == len(data)
    assert store.path(desc.digest) == store.root / "sha256" / desc.digest[7:]
    assert store.path(desc.digest).read_bytes() == data
    assert store.exists(desc.digest)
    assert store.size(desc.digest) == len(data)
    with store.open(desc.digest) as stream:
        assert stream.read() == data
    assert list(store.digests()) == [desc.digest]


def test_put_verifies_the_expected_digest_and_leaves_nothing(store: BlobStore) -> None:
    with pytest.raises(InvalidArgument, match=r"digest mismatch: expected sha256:0+, got sha256:"):
        store.put(io.BytesIO(b"data"), expected=Digest("sha256:" + "0" * 64))
    assert files_in(store) == []
    assert store.put(io.BytesIO(b"data"), expected=digest_of(b"data")).size == 4


def test_put_caps_the_size_and_leaves_nothing(store: BlobStore) -> None:
    with pytest.raises(InvalidArgument, match="exceeds the maximum of 10 bytes"):
        store.put(io.BytesIO(b"x" * 11), max_size=10)
    assert files_in(store) == []


def test_a_failing_stream_leaves_nothing(store: BlobStore) -> None:
    class Broken(io.RawIOBase):
        calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 1:
                raise OSError("connection reset")
            return b"partial"

    with pytest.raises(OSError, match="connection reset"):
        store.put(Broken())
    assert files_in(store) == []


def test_put_is_idempotent(store: BlobStore) -> None:
    first = store.put_bytes(b"same")
    second = store.put_bytes(b"same")
    assert first == second
    assert files_in(store) == [first.digest[7:]]


@pytest.mark.parametrize(
    "text",
    [
        "sha256:../../etc/passwd",
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "sha512:" + "a" * 128,
        "a" * 64,
        "sha256:" + "a" * 64 + "/x",
    ],
)
def test_invalid_digests_never_become_paths(store: BlobStore, text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid digest"):
        store.path(Digest(text))
    with pytest.raises(InvalidArgument, match="invalid digest"):
        parse_digest(text)


def test_missing_blob(store: BlobStore) -> None:
    missing = digest_of(b"missing")
    assert not store.exists(missing)
    with pytest.raises(NotFound, match=f"blob {missing} not found"):
        store.open(missing)
    store.delete(missing)  # deleting what is not there is fine


def test_delete(store: BlobStore) -> None:
    desc = store.put_bytes(b"x")
    store.delete(desc.digest)
    assert not store.exists(desc.digest)
    assert list(store.digests()) == []


def test_open_verified_detects_corruption(store: BlobStore) -> None:
    desc = store.put_bytes(b"original content")
    with store.open_verified(desc.digest) as stream:
        assert stream.read() == b"original content"
    store.path(desc.digest).write_bytes(b"tampered content")
    with pytest.raises(InvalidArgument, match=f"expected {desc.digest}"):
        store.read_bytes(desc.digest, max_size=100)


def test_read_bytes_caps_the_size(store: BlobStore) -> None:
    desc = store.put_bytes(b"x" * 100)
    with pytest.raises(InvalidArgument, match="exceeds the maximum of 10 bytes"):
        store.read_bytes(desc.digest, max_size=10)


def test_temporary_files_are_removed_at_startup(store: BlobStore) -> None:
    (store.root / "sha256" / ".tmp-crashed").write_bytes(b"half")
    kept = store.put_bytes(b"kept")
    assert list(store.digests()) == [kept.digest]
    store.remove_temporary()
    assert files_in(store) == [kept.digest[7:]]
