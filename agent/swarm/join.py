"""Joining a swarm: pin the CA by the token's digest, then trade the token for a certificate.

Order matters: the token's secret is sent only over a TLS connection verified with a
CA whose digest matched the token, so a node never hands its token to an impostor.
Nothing is written until the certificate comes back; a refused join leaves no files.
"""

from __future__ import annotations

import grpc

from api import objects_pb2 as objects
from api import pki, ports
from api import swarm_pb2 as swarm
from api import swarm_pb2_grpc as swarm_grpc
from api.credentials import NodeCredentials
from api.errors import InvalidArgument, PermissionDenied, PyswarmError, Unavailable

JOIN_TIMEOUT = 20.0


def split_addr(addr: str, *, default_port: int = ports.API_PORT) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep:
        return addr, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(f"invalid address {addr!r}: want HOST[:PORT]")
    return host.strip("[]"), int(port)


def join(
    token: str,
    *,
    remote: str,
    advertise_addr: str,
    availability: objects.Availability.ValueType,
    description: objects.NodeDescription,
    credentials: NodeCredentials,
) -> swarm.IssueResponse:
    parsed = pki.parse_token(token)
    host, port = split_addr(remote)
    join_port = ports.join_port(port)
    try:
        root = pki.fetch_root_ca(host, join_port, timeout=5.0)
    except Unavailable:
        raise Unavailable(
            f"no pyswarm manager answers at {host}:{port} (join port {join_port})"
        ) from None
    if pki.ca_digest(root) != parsed.digest:
        raise InvalidArgument(
            "remote CA does not match fingerprint in the join token "
            "(is it a token of another swarm?)"
        )
    key = pki.generate_key()
    request = swarm.IssueRequest(
        token=token,
        csr_pem=pki.make_csr(key),
        advertise_addr=advertise_addr,
        availability=availability,
        description=description,
    )
    with pki.cluster_channel(f"{host}:{join_port}", root) as channel:
        try:
            reply = swarm_grpc.NodeCAStub(channel).IssueNodeCertificate(
                request, timeout=JOIN_TIMEOUT
            )
        except grpc.RpcError as exc:
            raise join_error(exc) from None
    if not pki.issued_by(reply.cert_pem, root):
        raise PermissionDenied("the manager returned a certificate its CA did not sign")
    credentials.save(key_pem=pki.key_pem(key), cert_pem=reply.cert_pem, ca_pem=root)
    return reply


def join_error(exc: grpc.RpcError) -> PyswarmError:
    if not isinstance(exc, grpc.Call):
        return Unavailable(str(exc))
    details = exc.details() or exc.code().name
    if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(details)
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(details)
    return Unavailable(details)
