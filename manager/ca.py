"""The cluster root CA, held only by managers: creates the root at `swarm init` and
signs node certificates from CSRs.

Invariants:

- The root is a self-signed ECDSA P-256 certificate, CN "swarm-ca", CA:true with
  path length 0 (it signs leaves only), valid for 20 years by default.
- Every leaf is P-256 (other keys are refused), CN = node id, OU = role ("manager" or
  "worker", nothing else), O = "pyswarm", usable as both TLS server and client
  (nodes dial each other both ways), and never valid beyond the root itself.
- Manager leaves carry the DNS name `api.pki.TARGET_NAME` (plus any IPs given) so a
  client can dial any manager by address and verify it by that one name.
- Managers present leaf + root (`server_cert_chain`): the root in the chain is what a
  joining node pins by the digest in its join token.
- The subject of a CSR is ignored; the CA alone decides who a node is. Whether the
  caller may have a certificate for that role (the token check) is the caller's job.

Time is always passed in (`now`), never read, so issuance is testable.

Usage::

    ca = RootCA.create(now=now)
    leaf = ca.issue(csr, node_id="n1", role="worker", expiry=timedelta(days=90), now=now)
    chain = ca.server_cert_chain(leaf)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from api import pki
from api.errors import InvalidArgument

CA_COMMON_NAME = "swarm-ca"
DEFAULT_ROOT_EXPIRY = timedelta(days=20 * 365)
BACKDATE = timedelta(minutes=1)  # tolerate small clock skew between nodes


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _check_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise InvalidArgument("invalid certificate signing request: not a PEM CSR") from None
    if not csr.is_signature_valid:
        raise InvalidArgument("invalid certificate signing request: bad signature")
    key = csr.public_key()
    if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
        raise InvalidArgument("invalid certificate signing request: key is not ECDSA P-256")
    return csr


def _check_role(role: str) -> pki.Role:
    try:
        return pki.Role(role)
    except ValueError:
        raise InvalidArgument(f"invalid node role {role!r}: must be manager or worker") from None


def _sans(role: pki.Role, ips: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    if role is pki.Role.MANAGER:
        names.append(x509.DNSName(pki.TARGET_NAME))
    names.extend(x509.IPAddress(pki.validate_ip(ip)) for ip in ips)
    return names


@dataclass(frozen=True)
class RootCA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, *, now: datetime, expiry: timedelta = DEFAULT_ROOT_EXPIRY) -> RootCA:
        key = pki.generate_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + expiry)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert=cert, key=key)

    @classmethod
    def load(cls, cert_pem: bytes, key_pem: bytes) -> RootCA:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = pki.load_key(key_pem)
        if not pki.is_self_signed_ca(cert):
            raise InvalidArgument("root CA certificate is not a self-signed CA")
        if cert.public_key() != key.public_key():
            raise InvalidArgument("root CA key does not match its certificate")
        return cls(cert=cert, key=key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return pki.key_pem(self.key)

    @property
    def digest(self) -> str:
        return pki.ca_digest(self.cert_pem)

    def issue(
        self,
        csr_pem: bytes,
        *,
        node_id: str,
        role: str,
        expiry: timedelta,
        now: datetime,
        sans_ips: Sequence[str] = (),
    ) -> bytes:
        """Sign a node certificate for `csr_pem`; returns the leaf's PEM."""
        csr = _check_csr(csr_pem)
        node_role = _check_role(role)
        if not node_id:
            raise InvalidArgument("invalid node id: empty")
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, pki.ORGANIZATION),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, node_role.value),
                x509.NameAttribute(NameOID.COMMON_NAME, node_id),
            ]
        )
        public = csr.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(now + expiry, self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        sans = _sans(node_role, sans_ips)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def server_cert_chain(self, leaf_pem: bytes) -> bytes:
        """What a manager presents: its leaf, then the root a joining node pins."""
        return leaf_pem.rstrip(b"\n") + b"\n" + self.cert_pem
