"""The distribution client's protocol logic, over httpx.MockTransport."""

from __future__ import annotations

import io
import ssl
from pathlib import Path

import httpx
import pytest

from agent.registry.client import Endpoint, RegistryClient, is_loopback, tls_context
from api.errors import InvalidArgument, NotFound, Unavailable

from .fake import FakeRegistry, digest_of

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("registry", "loopback"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.3.4.5", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("10.0.0.1:5000", False),
        ("registry.example:443", False),
        ("docker.io", False),
    ],
)
def test_is_loopback(registry: str, loopback: bool) -> None:
    assert is_loopback(registry) is loopback


def test_endpoint_schemes_and_tls() -> None:
    hub = Endpoint.of("docker.io", insecure=())
    assert (hub.host, hub.schemes, hub.verify) == ("registry-1.docker.io", ("https",), True)
    local = Endpoint.of("127.0.0.1:5000", insecure=())
    assert (local.schemes, local.verify) == (("https", "http"), True)
    insecure = Endpoint.of("10.1.2.3:5000", insecure=("10.1.2.3:5000",))
    assert (insecure.schemes, insecure.verify) == (("https", "http"), False)


def test_tls_context_adds_certs_d(tmp_path: Path) -> None:
    (tmp_path / "reg.example:5000").mkdir()
    (tmp_path / "reg.example:5000" / "ca.crt").write_text("not a certificate")
    with pytest.raises(ssl.SSLError):
        tls_context("reg.example:5000", certs_dir=tmp_path)
    assert isinstance(tls_context("other:5000", certs_dir=tmp_path), ssl.SSLContext)


def make_client(registry: FakeRegistry, name: str = "127.0.0.1:5000") -> RegistryClient:
    return RegistryClient(
        Endpoint.of(name, insecure=()), "test/app", push=True, transport=registry.transport
    )


def test_ping_falls_back_to_http_for_loopback() -> None:
    registry = FakeRegistry()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "https":
            raise httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number")
        return registry.handle(request)

    endpoint = Endpoint.of("127.0.0.1:5000", insecure=())
    with RegistryClient(endpoint, "a", transport=httpx.MockTransport(handler)) as client:
        client.ping()
        assert client.base == "http://127.0.0.1:5000"


def test_unreachable_registry_is_one_line_naming_the_host() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    endpoint = Endpoint.of("127.0.0.1:5999", insecure=())
    with (
        RegistryClient(endpoint, "a", transport=httpx.MockTransport(handler)) as client,
        pytest.raises(Unavailable) as caught,
    ):
        client.ping()
    assert caught.value.message == "registry 127.0.0.1:5999 is unreachable: connection refused"


def test_manifest_by_digest_is_verified() -> None:
    registry = FakeRegistry()
    digest = registry.add_manifest("1", {"schemaVersion": 2}, "application/json")
    body, media_type = registry.manifests[digest]
    wrong = digest_of(b"something else")
    registry.manifests[wrong] = (body, media_type)
    with make_client(registry) as client:
        assert client.get_manifest(digest).digest == digest
        with pytest.raises(InvalidArgument, match="manifest digest mismatch"):
            client.get_manifest(wrong)


def test_missing_manifest_in_dockers_words() -> None:
    with make_client(FakeRegistry()) as client, pytest.raises(NotFound) as caught:
        client.get_manifest("nope")
    assert caught.value.message == (
        "manifest for 127.0.0.1:5000/test/app:nope not found: manifest unknown: manifest unknown"
    )


def test_upload_session_follows_relative_locations() -> None:
    registry = FakeRegistry()
    data = b"x" * (3 << 20)
    seen: list[int] = []
    with make_client(registry) as client:
        mounted = client.upload_blob(digest_of(data), io.BytesIO(data), progress=seen.append)
        assert not mounted
        assert client.has_blob(digest_of(data))
    assert registry.blobs[digest_of(data)] == data
    assert seen[-1] == len(data)
    assert [line.split()[0] for line in registry.log[:3]] == ["POST", "PATCH", "PUT"]


def test_blob_bytes_are_verified() -> None:
    registry = FakeRegistry()
    data = b'{"a": 1}'
    registry.blobs[digest_of(data)] = data
    registry.corrupt.add(digest_of(data))
    with (
        make_client(registry) as client,
        pytest.raises(InvalidArgument, match="blob digest mismatch"),
    ):
        client.get_blob_bytes(digest_of(data), max_size=1024)
