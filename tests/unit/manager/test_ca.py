"""The root CA (manager.ca): root properties, what a leaf says, what the CA refuses."""

from __future__ import annotations

import base64
import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from api import pki
from api.errors import InvalidArgument
from manager.ca import RootCA

pytestmark = pytest.mark.unit

NOW = datetime(2030, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def ca() -> RootCA:
    return RootCA.create(now=NOW)


def _issue(ca: RootCA, **overrides: object) -> x509.Certificate:
    kwargs: dict[str, object] = {"node_id": "n1", "role": "worker", "expiry": DAY, "now": NOW}
    kwargs.update(overrides)
    csr = kwargs.pop("csr", pki.make_csr(pki.generate_key()))
    pem = ca.issue(csr, **kwargs)  # type: ignore[arg-type]
    return x509.load_pem_x509_certificate(pem)


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> object:
    return name.get_attributes_for_oid(oid)[0].value


def test_root_is_a_self_signed_p256_ca(ca: RootCA) -> None:
    cert = ca.cert
    assert _attr(cert.subject, NameOID.COMMON_NAME) == "swarm-ca"
    assert cert.issuer == cert.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert isinstance(ca.key.curve, ec.SECP256R1)
    assert cert.not_valid_after_utc == NOW + timedelta(days=20 * 365)
    assert pki.is_self_signed_ca(cert)


def test_load_round_trips_and_checks_the_pair(ca: RootCA) -> None:
    loaded = RootCA.load(ca.cert_pem, ca.key_pem)
    assert loaded.cert_pem == ca.cert_pem and loaded.digest == ca.digest
    with pytest.raises(InvalidArgument, match="does not match"):
        RootCA.load(ca.cert_pem, pki.key_pem(pki.generate_key()))
    leaf = ca.issue(
        pki.make_csr(pki.generate_key()), node_id="n", role="worker", expiry=DAY, now=NOW
    )
    with pytest.raises(InvalidArgument, match="not a self-signed CA"):
        RootCA.load(leaf, ca.key_pem)


def test_issue_sets_cn_ou_o_and_usage(ca: RootCA) -> None:
    cert = _issue(ca, node_id="abc123", role="worker", expiry=timedelta(days=90))
    assert _attr(cert.subject, NameOID.COMMON_NAME) == "abc123"
    assert _attr(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME) == "worker"
    assert _attr(cert.subject, NameOID.ORGANIZATION_NAME) == "pyswarm"
    assert cert.issuer == ca.cert.subject
    cert.verify_directly_issued_by(ca.cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=1)
    assert cert.not_valid_after_utc == NOW + timedelta(days=90)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_manager_leaf_has_target_name_and_ips(ca: RootCA) -> None:
    cert = _issue(ca, role="manager", sans_ips=["10.0.0.1", "fd00::1"])
    assert _attr(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME) == "manager"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["swarm-manager"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.1"),
        ipaddress.ip_address("fd00::1"),
    ]


def test_leaf_never_outlives_the_root() -> None:
    short = RootCA.create(now=NOW, expiry=timedelta(days=10))
    cert = _issue(short, expiry=timedelta(days=90))
    assert cert.not_valid_after_utc == short.cert.not_valid_after_utc


@pytest.mark.parametrize("role", ["admin", "Manager", "", "workers"])
def test_wrong_role_refused(ca: RootCA, role: str) -> None:
    with pytest.raises(InvalidArgument, match="must be manager or worker"):
        _issue(ca, role=role)


def test_empty_node_id_and_bad_ip_refused(ca: RootCA) -> None:
    with pytest.raises(InvalidArgument, match="invalid node id"):
        _issue(ca, node_id="")
    with pytest.raises(InvalidArgument, match="invalid IP address"):
        _issue(ca, role="manager", sans_ips=["not-an-ip"])


def _tamper_signature(csr_pem: bytes) -> bytes:
    der = bytearray(x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte belongs to the signature's BIT STRING
    body = base64.encodebytes(bytes(der))
    return b"-----BEGIN CERTIFICATE REQUEST-----\n" + body + b"-----END CERTIFICATE REQUEST-----\n"


def test_csr_with_bad_signature_refused(ca: RootCA) -> None:
    csr = _tamper_signature(pki.make_csr(pki.generate_key()))
    with pytest.raises(InvalidArgument, match="bad signature"):
        _issue(ca, csr=csr)


def test_garbage_csr_refused(ca: RootCA) -> None:
    with pytest.raises(InvalidArgument, match="not a PEM CSR"):
        _issue(ca, csr=b"garbage")


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP384R1()), rsa.generate_private_key(65537, 2048)],
    ids=["p384", "rsa"],
)
def test_csr_with_non_p256_key_refused(ca: RootCA, key: ec.EllipticCurvePrivateKey) -> None:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(InvalidArgument, match="not ECDSA P-256"):
        _issue(ca, csr=csr.public_bytes(serialization.Encoding.PEM))


def test_server_cert_chain_is_leaf_then_root(ca: RootCA) -> None:
    leaf = ca.issue(
        pki.make_csr(pki.generate_key()), node_id="m", role="manager", expiry=DAY, now=NOW
    )
    chain = x509.load_pem_x509_certificates(ca.server_cert_chain(leaf))
    assert [c.public_bytes(serialization.Encoding.PEM) for c in chain] == [leaf, ca.cert_pem]
