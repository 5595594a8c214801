"""Join tokens, CA digests, certificate inspection and renewal timing (api.pki).

Certificates come from a real `manager.ca.RootCA`; time is always injected."""

from __future__ import annotations

import hmac
import random
import string
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from api import pki
from api.errors import InvalidArgument
from manager.ca import RootCA

pytestmark = pytest.mark.unit

NOW = datetime(2030, 1, 1, tzinfo=UTC)
DIGEST = "0" * 10 + "a" * 40
SECRET = "z" * 25


@pytest.fixture(scope="module")
def ca() -> RootCA:
    return RootCA.create(now=NOW)


def test_token_round_trip() -> None:
    token = pki.format_token(DIGEST, SECRET)
    assert token == f"SWMTKN-1-{DIGEST}-{SECRET}"
    assert pki.parse_token(token) == pki.JoinToken(DIGEST, SECRET)
    assert pki.parse_token(f"  {token}\n") == (DIGEST, SECRET)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "not a SWMTKN-1 token"),
        ("hello", "not a SWMTKN-1 token"),
        (f"SWMTKN-2-{DIGEST}-{SECRET}", "not a SWMTKN-1 token"),
        (f"swmtkn-1-{DIGEST}-{SECRET}", "not a SWMTKN-1 token"),
        (f"SWMTKN-1-{DIGEST}-{SECRET}-extra", "not a SWMTKN-1 token"),
        (f"SWMTKN-1-{DIGEST}{SECRET}", "not a SWMTKN-1 token"),
        (f"SWMTKN-1-{DIGEST[:-1]}-{SECRET}", "wrong CA digest length"),
        (f"SWMTKN-1-{DIGEST}0-{SECRET}", "wrong CA digest length"),
        (f"SWMTKN-1-{DIGEST}-{SECRET[:-1]}", "wrong secret length"),
        (f"SWMTKN-1-{DIGEST.upper()}-{SECRET}", "not lower-case base36"),
        (f"SWMTKN-1-{DIGEST}-{'!' * 25}", "not lower-case base36"),
    ],
)
def test_parse_token_refuses_garbage(token: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        pki.parse_token(token)
    assert caught.value.message == f"invalid join token: {reason}"
    assert "\n" not in caught.value.message


def test_new_secret_is_25_base36_chars_and_seedable() -> None:
    alphabet = set(string.digits + string.ascii_lowercase)
    secrets = {pki.new_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(len(s) == 25 and set(s) <= alphabet for s in secrets)
    assert pki.new_secret(random.Random(7)) == pki.new_secret(random.Random(7))
    assert pki.parse_token(pki.format_token(DIGEST, pki.new_secret())).digest == DIGEST


def test_tokens_equal_uses_constant_time_compare(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert pki.tokens_equal("abc", "abc")
    assert not pki.tokens_equal("abc", "abd")
    assert not pki.tokens_equal("abc", "abcd")
    assert not pki.tokens_equal("é", "e")
    assert len(calls) == 4


def test_digest_is_stable_50_base36_chars(ca: RootCA) -> None:
    digest = pki.ca_digest(ca.cert_pem)
    assert len(digest) == 50
    assert set(digest) <= set(string.digits + string.ascii_lowercase)
    assert digest == pki.ca_digest(ca.cert_pem) == ca.digest
    assert digest == RootCA.load(ca.cert_pem, ca.key_pem).digest
    assert digest != RootCA.create(now=NOW).digest
    pki.parse_token(pki.format_token(digest, pki.new_secret()))


def test_digest_pads_small_values() -> None:
    assert pki._base36(0, width=50) == "0" * 50
    assert pki._base36(36**2 + 35, width=5) == "0010z"
    assert len(pki._base36(2**256 - 1, width=50)) == 50


def test_key_pem_round_trip_and_csr() -> None:
    key = pki.generate_key()
    assert isinstance(key.curve, ec.SECP256R1)
    assert pki.key_pem(key).startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pki.load_key(pki.key_pem(key)).private_numbers() == key.private_numbers()
    assert pki.make_csr(key).startswith(b"-----BEGIN CERTIFICATE REQUEST-----")


def test_cert_info_and_issued_by(ca: RootCA) -> None:
    csr = pki.make_csr(pki.generate_key())
    leaf = ca.issue(csr, node_id="node1", role="worker", expiry=timedelta(days=90), now=NOW)
    info = pki.cert_info(leaf)
    assert (info.node_id, info.role) == ("node1", pki.Role.WORKER)
    assert info.not_before == NOW - timedelta(minutes=1)
    assert info.not_after == NOW + timedelta(days=90)
    assert info.not_before.tzinfo is not None
    assert pki.issued_by(leaf, ca.cert_pem)
    assert not pki.issued_by(leaf, RootCA.create(now=NOW).cert_pem)
    with pytest.raises(InvalidArgument, match="not a pyswarm node certificate"):
        pki.cert_info(ca.cert_pem)


def _info(*, days: float) -> pki.CertInfo:
    return pki.CertInfo(
        node_id="n",
        role=pki.Role.WORKER,
        not_before=NOW,
        not_after=NOW + timedelta(days=days),
        serial=1,
    )


def test_renewal_delay_between_50_and_80_percent_of_life() -> None:
    rng = random.Random(1234)
    info = _info(days=90)
    life = timedelta(days=90).total_seconds()
    delays = [pki.renewal_delay(info, now=NOW, rng=rng) for _ in range(2000)]
    assert all(0.5 * life <= d <= 0.8 * life for d in delays)
    # Spread over the whole window, not bunched at one end.
    assert min(delays) < 0.52 * life and max(delays) > 0.78 * life


def test_renewal_delay_counts_from_now_and_clamps_at_zero() -> None:
    info = _info(days=100)
    later = NOW + timedelta(days=40)
    for seed in range(100):
        delay = pki.renewal_delay(info, now=later, rng=random.Random(seed))
        assert timedelta(days=10).total_seconds() <= delay <= timedelta(days=40).total_seconds()
    past = NOW + timedelta(days=85)
    assert pki.renewal_delay(info, now=past, rng=random.Random(0)) == 0.0
    assert pki.renewal_delay(info, now=NOW + timedelta(days=200), rng=random.Random(0)) == 0.0


def test_channel_options_override_target_name() -> None:
    assert pki.channel_options() == [("grpc.ssl_target_name_override", "swarm-manager")]
