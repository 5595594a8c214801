"""save/load against a real peer: skopeo reads what we save, and we load what it writes.

Everything stays on local files (docker-archive:, oci-archive:, oci: transports); no
registry is contacted. The image is a tiny busybox rootfs made by `import_rootfs`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from agent.images.archive import load, save
from agent.images.store import Image, ImageStore

SKOPEO = shutil.which("skopeo")
BUSYBOX = Path("/usr/bin/busybox")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="busybox is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers chowns files"),
]


def skopeo(*args: str) -> str:
    assert SKOPEO is not None
    # --insecure-policy: the copies are between local files we made; no signatures
    result = subprocess.run(
        [SKOPEO, "--insecure-policy", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def inspect(transport: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(skopeo("inspect", transport))
    return document


def busybox_rootfs() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in ("sh", "ls", "echo"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return out.getvalue()


@pytest.fixture
def image(tmp_path: Path) -> tuple[ImageStore, Image]:
    store = ImageStore(tmp_path / "store")
    made = store.import_rootfs(
        io.BytesIO(busybox_rootfs()), "busybox:latest", changes=['CMD ["sh"]']
    )
    return store, made


@pytest.fixture
def archive(tmp_path: Path, image: tuple[ImageStore, Image]) -> Path:
    store, _ = image
    path = tmp_path / "busybox.tar"
    with path.open("wb") as out:
        save(store, ["busybox:latest"], out)
    return path


def test_skopeo_reads_the_docker_archive(archive: Path, image: tuple[ImageStore, Image]) -> None:
    _, made = image
    document = inspect(f"docker-archive:{archive}")
    # docker-archive presents layers by their uncompressed digest
    assert document["Layers"] == [layer.diff_id for layer in made.layers]
    assert document["Os"] == "linux"


def test_skopeo_reads_the_oci_archive(archive: Path, image: tuple[ImageStore, Image]) -> None:
    _, made = image
    # as with docker 25's archives, the OCI ref.name is the tag alone
    document = inspect(f"oci-archive:{archive}:latest")
    assert document["Digest"] == made.manifest_digest
    assert document["Layers"] == [layer.digest for layer in made.layers]
    config = json.loads(skopeo("inspect", "--config", f"oci-archive:{archive}:latest"))
    assert config["config"]["Cmd"] == ["sh"]


def test_load_what_skopeo_wrote_as_docker_archive(
    tmp_path: Path, archive: Path, image: tuple[ImageStore, Image]
) -> None:
    _, made = image
    copied = tmp_path / "other.tar"
    skopeo("copy", f"oci-archive:{archive}:latest", f"docker-archive:{copied}:busybox:copy")

    store = ImageStore(tmp_path / "loaded")
    with copied.open("rb") as stream:
        assert load(store, stream) == ["Loaded image: busybox:copy"]
    loaded = store.resolve("busybox:copy")
    assert [layer.diff_id for layer in loaded.layers] == [layer.diff_id for layer in made.layers]
    assert loaded.id == made.id
    (layer_dir,) = store.layer_dirs(loaded)
    assert (layer_dir / "bin/busybox").read_bytes() == BUSYBOX.read_bytes()
    assert os.readlink(layer_dir / "bin/sh") == "busybox"


def test_load_an_oci_layout_skopeo_wrote(
    tmp_path: Path, archive: Path, image: tuple[ImageStore, Image]
) -> None:
    _, made = image
    layout = tmp_path / "layout"
    skopeo("copy", f"oci-archive:{archive}:latest", f"oci:{layout}:busybox:oci")
    tarred = tmp_path / "layout.tar"
    with tarfile.open(tarred, "w") as tar:
        tar.add(layout, arcname=".")

    store = ImageStore(tmp_path / "loaded")
    with tarred.open("rb") as stream:
        assert load(store, stream) == ["Loaded image: busybox:oci"]
    loaded = store.resolve("busybox:oci")
    assert [layer.diff_id for layer in loaded.layers] == [layer.diff_id for layer in made.layers]
    assert loaded.id == made.id


def test_skopeo_reads_an_archive_that_went_through_load_and_save(
    tmp_path: Path, archive: Path, image: tuple[ImageStore, Image]
) -> None:
    _, made = image
    store = ImageStore(tmp_path / "second")
    with archive.open("rb") as stream:
        load(store, stream)
    again = tmp_path / "again.tar"
    with again.open("wb") as out:
        save(store, ["busybox"], out)
    assert inspect(f"docker-archive:{again}")["Layers"] == [made.layers[0].diff_id]
    assert again.read_bytes() == archive.read_bytes()
