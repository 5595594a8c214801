"""Cluster PKI primitives that both managers and agents need: keys, CSRs, join tokens,
certificate inspection, root-CA pinning and gRPC TLS credentials.

Trust model (as in swarmkit): `swarm init` creates a root CA (see `manager.ca`) whose
certificate is pinned by its digest, and that digest is part of every join token::

    SWMTKN-1-<sha256 of the root's DER, base36, 50 chars>-<secret, base36, 25 chars>

A joining node trusts nothing it has not checked against the token. The order is:

1. `parse_token(token)` — reject a malformed token before any network traffic;
2. `fetch_root_ca(host, port, timeout=...)` — an *unverified* TLS handshake that only
   reads the chain the manager presents (managers present leaf + root);
3. the caller compares `ca_digest(root)` with the token's digest and stops on mismatch;
4. only now is the root used as the trust anchor: `channel_credentials(root)` to ask for
   a certificate with a CSR from `make_csr(generate_key())`, sending the token's secret.

Node certificates carry the node id as CN and the role as OU ("manager" / "worker");
servicers learn who called with `peer_identity(context)`, which reads the verified
client certificate gRPC exposes in the auth context. Manager certificates carry the DNS
name `TARGET_NAME` so clients can dial a manager by IP address and still verify it, by
overriding the TLS target name with `channel_options()`.

Certificates are renewed at a random point between 50% and 80% of their lifetime
(`renewal_delay`), so nodes issued together do not all renew together.

Usage::

    key = generate_key()
    token = parse_token("SWMTKN-1-...")
    root = fetch_root_ca("10.0.0.1", 2377, timeout=5.0)
    if not tokens_equal(ca_digest(root), token.digest):
        raise InvalidArgument("...")
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from api.errors import InvalidArgument, Unavailable

TOKEN_PREFIX = "SWMTKN"
TOKEN_VERSION = "1"
DIGEST_LENGTH = 50  # 36**50 > 2**256: a sha256 always fits
SECRET_LENGTH = 25  # 36**25 > 2**128: a 128-bit secret always fits
_SECRET_BITS = 128
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"

TARGET_NAME = "swarm-manager"
ORGANIZATION = "pyswarm"

RENEW_MIN_FRACTION = 0.5
RENEW_MAX_FRACTION = 0.8


class Role(StrEnum):
    MANAGER = "manager"
    WORKER = "worker"


class JoinToken(NamedTuple):
    digest: str
    secret: str


@dataclass(frozen=True)
class CertInfo:
    node_id: str
    role: Role
    not_before: datetime
    not_after: datetime
    serial: int


@dataclass(frozen=True)
class Identity:
    """Who is calling, from a client certificate our CA issued."""

    node_id: str
    role: Role


# --- keys and CSRs -------------------------------------------------------------------


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A new ECDSA P-256 key, the only kind of key the CA signs for."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument("private key is not an ECDSA key")
    return key


def make_csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A PEM CSR with an empty subject: the CA decides the node id and the role."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


# --- digests and join tokens ---------------------------------------------------------


def _base36(value: int, *, width: int) -> str:
    digits = []
    while value:
        value, rest = divmod(value, 36)
        digits.append(_BASE36[rest])
    return "".join(reversed(digits)).rjust(width, "0")


def ca_digest(ca_cert_pem: bytes) -> str:
    """sha256 of the root certificate's DER, base36, zero-padded to 50 characters."""
    der = x509.load_pem_x509_certificate(ca_cert_pem).public_bytes(serialization.Encoding.DER)
    return _base36(int.from_bytes(hashlib.sha256(der).digest()), width=DIGEST_LENGTH)


def new_secret(rng: random.Random | None = None) -> str:
    """128 random bits as 25 base36 characters; the OS's CSPRNG unless `rng` is given
    (tests pass a seeded `random.Random`; production passes nothing)."""
    source = rng if rng is not None else random.SystemRandom()
    return _base36(source.getrandbits(_SECRET_BITS), width=SECRET_LENGTH)


def format_token(digest: str, secret: str) -> str:
    return f"{TOKEN_PREFIX}-{TOKEN_VERSION}-{digest}-{secret}"


def parse_token(token: str) -> JoinToken:
    """Split a join token, refusing anything malformed with a one-line reason."""
    parts = token.strip().split("-")
    if len(parts) != 4 or parts[0] != TOKEN_PREFIX or parts[1] != TOKEN_VERSION:
        raise InvalidArgument("invalid join token: not a SWMTKN-1 token")
    digest, secret = parts[2], parts[3]
    if len(digest) != DIGEST_LENGTH:
        raise InvalidArgument("invalid join token: wrong CA digest length")
    if len(secret) != SECRET_LENGTH:
        raise InvalidArgument("invalid join token: wrong secret length")
    if not set(digest + secret) <= set(_BASE36):
        raise InvalidArgument("invalid join token: not lower-case base36")
    return JoinToken(digest, secret)


def tokens_equal(a: str, b: str) -> bool:
    """Constant-time comparison, so a caller cannot learn a secret one byte at a time."""
    return hmac.compare_digest(a.encode(), b.encode())


# --- certificates --------------------------------------------------------------------


def _name_attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if not values:
        return None
    value = values[0].value
    return value.decode() if isinstance(value, bytes) else value


def cert_info(cert_pem: bytes) -> CertInfo:
    """Node id, role and validity of a node certificate (the first one in `cert_pem`)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    node_id = _name_attribute(cert.subject, NameOID.COMMON_NAME)
    role = _name_attribute(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
    if not node_id or role not in set(Role):
        raise InvalidArgument("certificate is not a pyswarm node certificate")
    return CertInfo(
        node_id=node_id,
        role=Role(role),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        serial=cert.serial_number,
    )


def is_self_signed_ca(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        cert.verify_directly_issued_by(cert)
    except (x509.ExtensionNotFound, InvalidSignature, ValueError, TypeError):
        return False
    return constraints.ca


def issued_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    """Whether `ca_pem` signed `cert_pem` (e.g. after a root rotation, is my cert current?)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def renewal_delay(info: CertInfo, *, now: datetime, rng: random.Random) -> float:
    """Seconds from `now` until renewal: a uniformly random point between 50% and 80% of
    the certificate's life, so that nodes issued together spread their renewals; 0 when
    that point has already passed."""
    life = info.not_after - info.not_before
    at = info.not_before + life * rng.uniform(RENEW_MIN_FRACTION, RENEW_MAX_FRACTION)
    return max(0.0, (at - now).total_seconds())


def validate_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        raise InvalidArgument(f"invalid IP address: {address!r}") from None


# --- pinning the root CA -------------------------------------------------------------


def _unverified_chain(tls: ssl.SSLSocket) -> list[bytes]:
    """DER certificates the server presented, leaf first.

    Python 3.11 only has the private `_sslobj.get_unverified_chain()` (public from 3.13,
    where it returns DER bytes; before, `_ssl.Certificate` objects). Without it only the
    leaf is reachable, which is enough when a manager presents its root alone."""
    sslobj: Any = getattr(tls, "_sslobj", None)
    getter = getattr(tls, "get_unverified_chain", None) or getattr(
        sslobj, "get_unverified_chain", None
    )
    if getter is None:
        leaf = tls.getpeercert(binary_form=True)
        return [leaf] if leaf else []
    chain: list[bytes] = []
    for item in getter() or []:
        if isinstance(item, bytes):
            chain.append(item)
        else:
            chain.append(item.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
    return chain


def _client_context() -> ssl.SSLContext:
    # Verification is deliberately off: this handshake only *reads* the chain, and the
    # caller pins the root by the digest in the join token before trusting it.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    return context


def fetch_root_ca(host: str, port: int, *, timeout: float) -> bytes:
    """PEM of the self-signed root in the chain the manager at host:port presents.

    Unverified by design; see the module docstring for the order of checks. A manager
    that requires client certificates still lets this work under TLS 1.3, where the
    client finishes its handshake before the server judges the (absent) client cert."""
    where = f"{host}:{port}"
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        raise Unavailable(f"no pyswarm manager answers at {where}") from None
    try:
        with _client_context().wrap_socket(raw, server_hostname=TARGET_NAME) as tls:
            chain = _unverified_chain(tls)
    except TimeoutError:
        raise Unavailable(f"no pyswarm manager answers at {where}") from None
    except OSError:  # ssl.SSLError included: not TLS, no common protocol, reset
        chain = []
    finally:
        raw.close()
    for der in chain:
        cert = x509.load_der_x509_certificate(der)
        if is_self_signed_ca(cert):
            return cert.public_bytes(serialization.Encoding.PEM)
    raise Unavailable(f"the manager at {where} did not present a CA certificate")


# --- gRPC ----------------------------------------------------------------------------


class _HasAuthContext(Protocol):
    """Both `grpc.ServicerContext` and `grpc.aio.ServicerContext`."""

    def auth_context(self) -> Mapping[str, object]: ...


def _first_value(auth: Mapping[str, object], key: str) -> bytes | None:
    values = auth.get(key)
    if isinstance(values, bytes):
        return values
    if isinstance(values, list | tuple) and values and isinstance(values[0], bytes):
        return values[0]
    return None


def peer_identity(context: _HasAuthContext) -> Identity | None:
    """The caller's node id (CN) and role (OU) from its verified client certificate, or
    None without one. gRPC only fills `x509_pem_cert` after verifying the certificate
    against the server's root, so what is read here is trustworthy."""
    pem = _first_value(context.auth_context(), "x509_pem_cert")
    if pem is None:
        return None
    try:
        info = cert_info(pem)
    except (InvalidArgument, ValueError):
        return None
    return Identity(node_id=info.node_id, role=info.role)


def server_credentials(
    cert_pem: bytes, key_pem: bytes, ca_pem: bytes, *, require_client_auth: bool
) -> grpc.ServerCredentials:
    """`cert_pem` should be the chain leaf + root (`manager.ca.server_cert_chain`), so
    joining nodes can find the root to pin with `fetch_root_ca`."""
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=require_client_auth
    )


def channel_credentials(
    ca_pem: bytes, *, cert_pem: bytes | None = None, key_pem: bytes | None = None
) -> grpc.ChannelCredentials:
    """Trust only the cluster root; present a node certificate when given one."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )


def channel_options() -> list[tuple[str, str]]:
    """Verify managers by the DNS name in their certificate, whatever address is dialled."""
    return [("grpc.ssl_target_name_override", TARGET_NAME)]


def cluster_channel(
    addr: str, ca_pem: bytes, *, cert_pem: bytes | None = None, key_pem: bytes | None = None
) -> grpc.Channel:
    """A TLS channel to a manager at `addr`, trusting only the cluster root and
    presenting the node's certificate when given one (mutual TLS)."""
    return grpc.secure_channel(
        addr,
        channel_credentials(ca_pem, cert_pem=cert_pem, key_pem=key_pem),
        options=channel_options(),
    )
