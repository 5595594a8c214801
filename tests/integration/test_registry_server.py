"""`pyswarm registry serve` against Debian's skopeo, a client nobody here wrote.

Each test starts the server as a subprocess on a free loopback port, waits for `/v2/`
to answer, and stops it by its PID with SIGTERM (it must exit 0). Images are OCI
layouts written by hand (one gzip layer, a config, a manifest), so no daemon and no
public registry is involved.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemons import PYSWARM, wait_for

SKOPEO = shutil.which("skopeo")
HTPASSWD = shutil.which("htpasswd")
OPENSSL = shutil.which("openssl")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed"),
]


@dataclass
class Registry:
    process: subprocess.Popen[bytes]
    port: int
    scheme: str
    log: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ref(self, image: str) -> str:
        return f"docker://{self.host}/{image}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http() -> httpx.Client:
    # trust_env=False: loopback only, whatever proxy the environment names
    return httpx.Client(trust_env=False, verify=False, timeout=10)


def _answers(url: str) -> bool:
    try:
        with http() as client:
            return client.get(url, timeout=1).status_code in (200, 401)
    except httpx.TransportError:
        return False


@contextlib.contextmanager
def registry(tmp_path: Path, *args: str, scheme: str = "http") -> Iterator[Registry]:
    port = free_port()
    log = tmp_path / "registry.log"
    command = [PYSWARM, "registry", "serve", "--addr", f"127.0.0.1:{port}"]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*command, "--root", str(tmp_path / "root"), *args], stdout=out, stderr=out
        )
    server = Registry(process, port, scheme, log)
    try:
        wait_for(
            lambda: process.poll() is not None or _answers(f"{scheme}://{server.host}/v2/"),
            timeout=20,
            what="the registry to answer",
        )
        assert process.poll() is None, log.read_text()
        yield server
    finally:
        killed_by_test = process.poll() is not None
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)  # by PID; a no-op once it has been reaped
        try:
            code = process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise
    if not killed_by_test:
        assert code == 0, log.read_text()  # SIGTERM is a clean stop
        assert time.monotonic() - started < 15


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert SKOPEO is not None
    # --insecure-policy: no signature policy for images this test made itself
    result = subprocess.run(
        [SKOPEO, "--insecure-policy", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def _add_blob(layout: Path, data: bytes) -> dict[str, Any]:
    hexpart = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / hexpart).write_bytes(data)
    return {"digest": f"sha256:{hexpart}", "size": len(data)}


def make_oci_layout(layout: Path, content: bytes = b"hello\n") -> str:
    """An OCI layout with one image tagged `latest`; the digest of its one layer."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    rootfs = io.BytesIO()
    with tarfile.open(fileobj=rootfs, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    layer = _add_blob(layout, gzip.compress(rootfs.getvalue(), mtime=0))
    diff_id = "sha256:" + hashlib.sha256(rootfs.getvalue()).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_add_blob(layout, json.dumps(config).encode()),
        },
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
    }
    descriptor = {
        "mediaType": OCI_MANIFEST,
        **_add_blob(layout, json.dumps(manifest).encode()),
        "annotations": {"org.opencontainers.image.ref.name": "latest"},
    }
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))
    return str(layer["digest"])


def blob_names(layout: Path) -> set[str]:
    return {p.name for p in (layout / "blobs" / "sha256").iterdir()}


def test_skopeo_oci_round_trip(tmp_path: Path) -> None:
    layer = make_oci_layout(tmp_path / "src")
    with registry(tmp_path) as server:
        skopeo(
            "copy",
            "--dest-tls-verify=false",
            f"oci:{tmp_path}/src:latest",
            server.ref("test/app:1"),
        )
        inspected = json.loads(
            skopeo("inspect", "--tls-verify=false", server.ref("test/app:1")).stdout
        )
        assert inspected["Layers"] == [layer]
        assert inspected["RepoTags"] == ["1"]
        skopeo(
            "copy", "--src-tls-verify=false", server.ref("test/app:1"), f"oci:{tmp_path}/out:latest"
        )
    assert blob_names(tmp_path / "out") == blob_names(tmp_path / "src")  # manifest included


def test_skopeo_docker_schema2_round_trip(tmp_path: Path) -> None:
    layer = make_oci_layout(tmp_path / "src")
    with registry(tmp_path) as server:
        ref = server.ref("test/v2s2:1")
        skopeo(
            "copy", "--format", "v2s2", "--dest-tls-verify=false", f"oci:{tmp_path}/src:latest", ref
        )
        raw = skopeo("inspect", "--raw", "--tls-verify=false", ref).stdout
        assert json.loads(raw)["mediaType"] == DOCKER_MANIFEST
        digest = json.loads(skopeo("inspect", "--tls-verify=false", ref).stdout)["Digest"]
        skopeo("copy", "--src-tls-verify=false", ref, f"dir:{tmp_path}/out")
    manifest = (tmp_path / "out" / "manifest.json").read_bytes()
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == digest  # exact bytes kept
    assert (tmp_path / "out" / layer.removeprefix("sha256:")).is_file()


def test_skopeo_list_tags_and_second_repository(tmp_path: Path) -> None:
    make_oci_layout(tmp_path / "src")
    with registry(tmp_path) as server:
        for tag in ("1", "2", "latest"):
            skopeo(
                "copy",
                "--dest-tls-verify=false",
                f"oci:{tmp_path}/src:latest",
                server.ref(f"test/app:{tag}"),
            )
        # a second repository: skopeo may mount the blobs from the first
        skopeo(
            "copy", "--dest-tls-verify=false", f"oci:{tmp_path}/src:latest", server.ref("other:1")
        )
        listed = json.loads(
            skopeo("list-tags", "--tls-verify=false", server.ref("test/app")).stdout
        )
        assert sorted(listed["Tags"]) == ["1", "2", "latest"]
        skopeo("inspect", "--tls-verify=false", server.ref("other:1"))
        with http() as client:
            catalog = client.get(f"http://{server.host}/v2/_catalog").json()
        assert catalog == {"repositories": ["other", "test/app"]}


@pytest.mark.skipif(HTPASSWD is None, reason="htpasswd (apache2-utils) is not installed")
def test_skopeo_basic_auth(tmp_path: Path) -> None:
    assert HTPASSWD is not None
    passwords = tmp_path / "htpasswd"
    subprocess.run(
        [HTPASSWD, "-B", "-b", "-c", str(passwords), "alice", "s3cret"], check=True, timeout=30
    )
    make_oci_layout(tmp_path / "src")
    src = f"oci:{tmp_path}/src:latest"
    auth_file = ["--authfile", str(tmp_path / "auth.json")]  # never the user's own
    with registry(tmp_path, "--htpasswd", str(passwords)) as server:
        ref = server.ref("test/app:1")
        denied = skopeo("copy", *auth_file, "--dest-tls-verify=false", src, ref, check=False)
        assert denied.returncode != 0
        assert "unauthorized" in denied.stderr.lower() or "401" in denied.stderr
        wrong = ["--dest-creds", "alice:wrong"]
        assert (
            skopeo("copy", *wrong, "--dest-tls-verify=false", src, ref, check=False).returncode != 0
        )
        skopeo("copy", "--dest-creds", "alice:s3cret", "--dest-tls-verify=false", src, ref)
        skopeo("inspect", "--creds", "alice:s3cret", "--tls-verify=false", ref)


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_skopeo_over_tls_with_a_self_signed_certificate(tmp_path: Path) -> None:
    assert OPENSSL is not None
    certs = tmp_path / "certs"
    certs.mkdir()
    cert, key = certs / "ca.crt", tmp_path / "registry.key"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    layer = make_oci_layout(tmp_path / "src")
    tls = ["--tls-cert", str(cert), "--tls-key", str(key)]
    with registry(tmp_path, *tls, scheme="https") as server:
        ref = server.ref("secure/app:1")
        skopeo("copy", "--dest-cert-dir", str(certs), f"oci:{tmp_path}/src:latest", ref)
        inspected = json.loads(skopeo("inspect", "--cert-dir", str(certs), ref).stdout)
        assert inspected["Layers"] == [layer]
        untrusted = skopeo("inspect", "--cert-dir", str(tmp_path / "src"), ref, check=False)
        assert untrusted.returncode != 0  # the self-signed certificate is not trusted


def _start_cut_off_upload(server: Registry, name: str, data: bytes) -> socket.socket:
    """Start a monolithic upload of `data` and send only half of it; the open socket."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    head = (
        f"POST /v2/{name}/blobs/uploads/?digest={digest} HTTP/1.1\r\n"
        f"Host: {server.host}\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    connection.sendall(head.encode() + data[: len(data) // 2])
    return connection


def _received(uploads: Path, size: int) -> bool:
    return any(p.stat().st_size >= size for p in uploads.glob("*/data"))


def test_uploads_survive_a_crash_and_nothing_partial_becomes_a_blob(tmp_path: Path) -> None:
    data, cut = os.urandom(3 << 20), os.urandom(2 << 20)
    first = 1 << 20
    with registry(tmp_path) as server, http() as client:
        base = f"http://{server.host}"
        location = client.post(f"{base}/v2/app/blobs/uploads/").headers["Location"]
        r = client.patch(
            base + location, content=data[:first], headers={"Content-Range": f"0-{first - 1}"}
        )
        assert r.status_code == 202
        # a second upload is mid-body (half on disk, the client still sending) when
        # the server is SIGKILLed by its PID: a crash, no clean-up of any kind
        with _start_cut_off_upload(server, "app", cut):
            wait_for(
                lambda: _received(tmp_path / "root" / "uploads", len(cut) // 2),
                timeout=10,
                what="half of the cut-off upload on disk",
            )
            server.process.kill()
            server.process.wait(timeout=10)
    with registry(tmp_path) as server, http() as client:
        base = f"http://{server.host}"
        assert client.get(base + location).headers["Range"] == f"0-{first - 1}"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = client.put(base + location, params={"digest": digest}, content=data[first:])
        assert r.status_code == 201, r.text
        assert client.get(f"{base}/v2/app/blobs/{digest}").content == data
    blobs = {p.name for p in (tmp_path / "root" / "blobs" / "sha256").iterdir()}
    assert blobs == {digest.removeprefix("sha256:")}
