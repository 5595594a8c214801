"""Layer tars: an overlayfs upper dir with whiteouts, COPY entries with --chown, and
storing a tar in the blob store in one pass. mknod and trusted.* xattrs need root."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from agent.build.layers import Entry, copy_tar, sources_digest, store_layer, upper_dir_tar
from agent.images.blobs import sha256_digest
from agent.images.store import ImageStore

pytestmark = pytest.mark.unit
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod and trusted xattrs need root")


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


@needs_root
def test_upper_dir_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "bin").mkdir(parents=True)
    os.mknod(upper / "bin" / "vi", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    (upper / "opaque").mkdir()
    os.setxattr(upper / "opaque", "trusted.overlay.opaque", b"y")
    (upper / "opaque" / "new").write_text("n")
    (upper / "etc").mkdir()
    (upper / "etc" / "hosts").write_text("")  # a mount point the runtime made
    (upper / "etc" / "conf").write_text("c")
    os.link(upper / "etc" / "conf", upper / "etc" / "conf2")
    os.symlink("/etc/conf", upper / "link")
    out = io.BytesIO()
    upper_dir_tar(upper, out)
    members = _members(out.getvalue())
    assert members["bin/.wh.vi"].isreg() and members["bin/.wh.vi"].size == 0
    assert "bin/vi" not in members
    assert members["opaque/.wh..wh..opq"].isreg()
    assert list(members).index("opaque") < list(members).index("opaque/.wh..wh..opq")
    assert "etc/hosts" not in members
    assert members["etc/conf2"].islnk() and members["etc/conf2"].linkname == "etc/conf"
    assert members["link"].issym() and members["link"].linkname == "/etc/conf"


def test_copy_tar_with_chown_and_parents(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("data")
    os.chmod(src / "sub" / "f", 0o640)
    entries = [
        Entry(name="opt", mode=0o755, owner=(0, 0)),
        Entry(name="opt/app", source=src, owner=(1000, 1001)),
    ]
    out = io.BytesIO()
    copy_tar(entries, out)
    members = _members(out.getvalue())
    assert list(members) == ["opt", "opt/app", "opt/app/sub", "opt/app/sub/f"]
    assert (members["opt"].uid, members["opt"].gid) == (0, 0)
    f = members["opt/app/sub/f"]
    assert (f.uid, f.gid, f.mode, f.uname) == (1000, 1001, 0o640, "")


def test_sources_digest_sees_content_and_mode_not_time(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("one")
    entries = [Entry(name="f", source=f, owner=None)]
    first = sources_digest(entries)
    os.utime(f, (1, 1))
    assert sources_digest(entries) == first
    f.write_text("two")
    second = sources_digest(entries)
    assert second != first
    os.chmod(f, 0o600)
    assert sources_digest(entries) != second


def test_store_layer_gzips_and_hashes_in_one_pass(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    (tmp_path / "f").write_text("x")
    produced = io.BytesIO()
    copy_tar([Entry(name="f", source=tmp_path / "f")], produced)
    with store.lease() as lease:
        blob, diff_id = store_layer(
            lease, lambda out: copy_tar([Entry(name="f", source=tmp_path / "f")], out)
        )
        stored = store.blobs.path(blob.digest).read_bytes()
    assert diff_id == sha256_digest(produced.getvalue())
    assert gzip.decompress(stored) == produced.getvalue()
    assert not store.blobs.exists(blob.digest)  # nothing references it: collected


def test_store_layer_failure_leaves_no_blob(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")

    def broken(out: io.RawIOBase) -> None:
        out.write(b"\0" * 512)
        raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"), store.lease() as lease:
        store_layer(lease, broken)  # type: ignore[arg-type]
    assert list(store.blobs.digests()) == []
