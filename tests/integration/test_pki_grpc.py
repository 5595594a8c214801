"""Mutual TLS with the cluster CA over real gRPC on loopback (api.pki + manager.ca).

A manager-like server on 127.0.0.1 (ephemeral port) requires client certificates and
presents leaf + root; one generic unary method echoes bytes and records who called.
No protos, no processes; every server is stopped by its fixture.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from api import pki
from api.errors import Unavailable
from manager.ca import RootCA

pytestmark = pytest.mark.integration

METHOD = "/pyswarm.test.Echo/Echo"
RPC_TIMEOUT = 3.0
NOW = datetime.now(UTC)


@dataclass
class Node:
    cert_pem: bytes
    key_pem: bytes


@dataclass
class Server:
    port: int
    ca: RootCA
    seen: list[pki.Identity | None] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def _node(ca: RootCA, *, node_id: str, role: str, ips: tuple[str, ...] = ()) -> Node:
    key = pki.generate_key()
    csr = pki.make_csr(key)
    cert = ca.issue(
        csr, node_id=node_id, role=role, expiry=timedelta(hours=1), now=NOW, sans_ips=ips
    )
    return Node(cert, pki.key_pem(key))


@pytest.fixture(scope="module")
def ca() -> RootCA:
    return RootCA.create(now=NOW)


def _start(ca: RootCA, *, require_client_auth: bool) -> tuple[grpc.Server, Server]:
    manager = _node(ca, node_id="manager1", role="manager", ips=("127.0.0.1",))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    state = Server(port=0, ca=ca)

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        state.seen.append(pki.peer_identity(context))
        return request

    handler = grpc.method_handlers_generic_handler(
        "pyswarm.test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    credentials = pki.server_credentials(
        ca.server_cert_chain(manager.cert_pem),
        manager.key_pem,
        ca.cert_pem,
        require_client_auth=require_client_auth,
    )
    state.port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, state


@pytest.fixture
def mtls_server(ca: RootCA) -> Iterator[Server]:
    server, state = _start(ca, require_client_auth=True)
    try:
        yield state
    finally:
        server.stop(grace=None).wait(5)


def _call(channel: grpc.Channel) -> bytes:
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
    return call(b"ping", timeout=RPC_TIMEOUT)


def _secure_call(server: Server, credentials: grpc.ChannelCredentials) -> bytes:
    with grpc.secure_channel(server.target, credentials, options=pki.channel_options()) as ch:
        return _call(ch)


def test_client_from_same_ca_is_identified(mtls_server: Server) -> None:
    worker = _node(mtls_server.ca, node_id="worker7", role="worker")
    credentials = pki.channel_credentials(
        mtls_server.ca.cert_pem, cert_pem=worker.cert_pem, key_pem=worker.key_pem
    )
    assert _secure_call(mtls_server, credentials) == b"ping"
    assert mtls_server.seen == [pki.Identity(node_id="worker7", role=pki.Role.WORKER)]


def test_manager_client_and_dial_by_ip_without_override(mtls_server: Server) -> None:
    # The server leaf carries IP 127.0.0.1, so no target name override is needed here.
    peer = _node(mtls_server.ca, node_id="manager2", role="manager")
    credentials = pki.channel_credentials(
        mtls_server.ca.cert_pem, cert_pem=peer.cert_pem, key_pem=peer.key_pem
    )
    with grpc.secure_channel(mtls_server.target, credentials) as channel:
        assert _call(channel) == b"ping"
    assert mtls_server.seen == [pki.Identity(node_id="manager2", role=pki.Role.MANAGER)]


def _assert_refused(server: Server, channel: grpc.Channel) -> None:
    with channel, pytest.raises(grpc.RpcError) as caught:
        _call(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert server.seen == []


def test_client_from_other_ca_fails(mtls_server: Server) -> None:
    stranger = _node(RootCA.create(now=NOW), node_id="evil", role="manager")
    credentials = pki.channel_credentials(
        mtls_server.ca.cert_pem, cert_pem=stranger.cert_pem, key_pem=stranger.key_pem
    )
    channel = grpc.secure_channel(mtls_server.target, credentials, options=pki.channel_options())
    _assert_refused(mtls_server, channel)


def test_client_without_certificate_fails(mtls_server: Server) -> None:
    credentials = pki.channel_credentials(mtls_server.ca.cert_pem)
    channel = grpc.secure_channel(mtls_server.target, credentials, options=pki.channel_options())
    _assert_refused(mtls_server, channel)


def test_client_trusting_other_ca_fails(mtls_server: Server) -> None:
    # The client side of pinning: a server from another cluster is not believed.
    other = RootCA.create(now=NOW)
    worker = _node(other, node_id="w", role="worker")
    credentials = pki.channel_credentials(
        other.cert_pem, cert_pem=worker.cert_pem, key_pem=worker.key_pem
    )
    channel = grpc.secure_channel(mtls_server.target, credentials, options=pki.channel_options())
    _assert_refused(mtls_server, channel)


def test_insecure_channel_fails(mtls_server: Server) -> None:
    _assert_refused(mtls_server, grpc.insecure_channel(mtls_server.target))


def test_fetch_root_ca_returns_the_pinned_root(mtls_server: Server) -> None:
    root = pki.fetch_root_ca("127.0.0.1", mtls_server.port, timeout=RPC_TIMEOUT)
    assert root == mtls_server.ca.cert_pem
    assert pki.ca_digest(root) == mtls_server.ca.digest
    token = pki.parse_token(pki.format_token(mtls_server.ca.digest, pki.new_secret()))
    assert pki.tokens_equal(pki.ca_digest(root), token.digest)


def test_fetch_root_ca_on_closed_port_fails_fast() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        pki.fetch_root_ca("127.0.0.1", port, timeout=RPC_TIMEOUT)
    assert caught.value.message == f"no pyswarm manager answers at 127.0.0.1:{port}"
    assert time.monotonic() - started < 1.0


def test_fetch_root_ca_from_plaintext_server_fails() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with pytest.raises(Unavailable) as caught:
            pki.fetch_root_ca("127.0.0.1", port, timeout=RPC_TIMEOUT)
    finally:
        server.stop(grace=None).wait(5)
    assert caught.value.message == (
        f"the manager at 127.0.0.1:{port} did not present a CA certificate"
    )


def test_optional_client_auth_never_sees_the_client_cert(ca: RootCA) -> None:
    # grpcio maps require_client_auth=False to "don't request a client certificate", so
    # a server meant for joining nodes cannot identify nodes that do have one.
    server, state = _start(ca, require_client_auth=False)
    try:
        worker = _node(ca, node_id="w1", role="worker")
        with_cert = pki.channel_credentials(
            ca.cert_pem, cert_pem=worker.cert_pem, key_pem=worker.key_pem
        )
        assert _secure_call(state, with_cert) == b"ping"
        assert _secure_call(state, pki.channel_credentials(ca.cert_pem)) == b"ping"
        assert pki.fetch_root_ca("127.0.0.1", state.port, timeout=RPC_TIMEOUT) == ca.cert_pem
    finally:
        server.stop(grace=None).wait(5)
    assert state.seen == [None, None]
