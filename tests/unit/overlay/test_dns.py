"""The embedded DNS server's answer policy, resolv.conf text and upstream parsing (no sockets)."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from api import errors
from overlay.dns import Forward, answer, parse_upstream, read_upstreams, resolv_conf, servfail

pytestmark = pytest.mark.unit

WEB = [IPv4Address("10.0.1.5"), IPv4Address("10.0.1.3"), IPv4Address("10.0.1.4")]
SWARM: dict[str, list[IPv4Address]] = {"web": WEB, "tasks.web": WEB[:1], "idle": []}


def lookup(name: str) -> list[IPv4Address] | None:
    return SWARM.get(name)


def query(name: str, qtype: str = "A", **header: int) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    for field, value in header.items():
        setattr(q.header, field, value)
    return q


def parsed(verdict: object) -> DNSRecord:
    assert isinstance(verdict, bytes)
    return DNSRecord.parse(verdict)


def test_a_for_a_swarm_name_lists_every_address_in_order() -> None:
    q = query("web")
    reply = parsed(answer(q.pack(), lookup, ttl=7))
    assert reply.header.id == q.header.id
    assert reply.header.qr == 1 and reply.header.aa == 1 and reply.header.ra == 1
    assert reply.header.rcode == RCODE.NOERROR
    assert [str(rr.rdata) for rr in reply.rr] == [str(a) for a in WEB]
    assert {rr.ttl for rr in reply.rr} == {7}
    assert {rr.rtype for rr in reply.rr} == {QTYPE.A}
    assert str(reply.q.qname) == "web."


def test_default_ttl_is_zero_and_rd_is_echoed() -> None:
    reply = parsed(answer(query("tasks.web").pack(), lookup))
    assert [(str(rr.rdata), rr.ttl) for rr in reply.rr] == [("10.0.1.5", 0)]
    assert reply.header.rd == 1


def test_names_are_matched_lower_case_without_the_trailing_dot() -> None:
    seen: list[str] = []

    def record(name: str) -> list[IPv4Address]:
        seen.append(name)
        return WEB[:1]

    reply = parsed(answer(query("WeB.").pack(), record))
    assert seen == ["web"]
    assert len(reply.rr) == 1


@pytest.mark.parametrize("qtype", ["AAAA", "MX", "TXT", "SRV", "ANY"])
def test_other_types_for_a_swarm_name_are_nodata_never_forwarded(qtype: str) -> None:
    reply = parsed(answer(query("web", qtype).pack(), lookup))
    assert reply.header.rcode == RCODE.NOERROR
    assert reply.rr == []
    assert reply.q.qtype == getattr(QTYPE, qtype)


def test_a_swarm_name_without_addresses_is_nodata_not_nxdomain() -> None:
    reply = parsed(answer(query("idle").pack(), lookup))
    assert reply.header.rcode == RCODE.NOERROR
    assert reply.rr == []


@pytest.mark.parametrize("qtype", ["A", "AAAA", "PTR"])
def test_names_not_of_the_swarm_are_forwarded(qtype: str) -> None:
    assert answer(query("example.com", qtype).pack(), lookup) == Forward("example.com")


def test_a_failing_lookup_is_servfail() -> None:
    def broken(name: str) -> list[IPv4Address]:
        raise RuntimeError("state unavailable")

    q = query("web")
    reply = parsed(answer(q.pack(), broken))
    assert reply.header.rcode == RCODE.SERVFAIL
    assert reply.header.id == q.header.id


@pytest.mark.parametrize(
    "packet",
    [b"", b"\x00", b"garbage!", b"\x12\x34" + b"\x01\x00" + b"\x00\x01" * 4, b"\xff" * 40],
)
def test_malformed_packets_are_dropped(packet: bytes) -> None:
    assert answer(packet, lookup) is None


def test_responses_are_dropped() -> None:
    assert answer(query("web", qr=1).pack(), lookup) is None


def test_other_opcodes_are_notimp() -> None:
    reply = parsed(answer(query("web", opcode=2).pack(), lookup))
    assert reply.header.rcode == RCODE.NOTIMP


def test_no_question_is_formerr() -> None:
    q = query("web")
    q.questions = []
    reply = parsed(answer(q.pack(), lookup))
    assert reply.header.rcode == RCODE.FORMERR
    assert reply.questions == []


MANY = [IPv4Address(f"10.0.{i // 250}.{i % 250 + 1}") for i in range(100)]


def test_udp_answers_over_512_bytes_are_truncated() -> None:
    reply = parsed(answer(query("many").pack(), lambda n: MANY))
    assert reply.header.tc == 1
    assert reply.rr == []
    assert str(reply.q.qname) == "many."


def test_edns_clients_get_their_size_and_tcp_gets_everything() -> None:
    q = query("many")
    q.add_ar(EDNS0(udp_len=4096))
    reply = parsed(answer(q.pack(), lambda n: MANY))
    assert reply.header.tc == 0 and len(reply.rr) == 100
    assert any(rr.rtype == QTYPE.OPT for rr in reply.ar)
    reply = parsed(answer(query("many").pack(), lambda n: MANY, max_size=65535))
    assert reply.header.tc == 0 and len(reply.rr) == 100


def test_servfail_for_a_forwarded_query() -> None:
    q = query("example.com")
    reply = parsed(servfail(q.pack()))
    assert reply.header.rcode == RCODE.SERVFAIL and reply.header.id == q.header.id
    assert servfail(b"junk") is None


# -- resolv.conf and upstreams ---------------------------------------------------------


def test_resolv_conf_text() -> None:
    assert resolv_conf() == "nameserver 127.0.0.11\noptions ndots:0\n"
    assert resolv_conf(["svc.local", "local"], ["timeout:1", "attempts:2"]) == (
        "nameserver 127.0.0.11\nsearch svc.local local\noptions ndots:0 timeout:1 attempts:2\n"
    )
    assert resolv_conf(options=["ndots:2"]) == "nameserver 127.0.0.11\noptions ndots:2\n"


@pytest.mark.parametrize("bad", [["a b"], ["x\nnameserver 1.2.3.4"], [""]])
def test_resolv_conf_refuses_entries_that_would_inject_lines(bad: list[str]) -> None:
    with pytest.raises(errors.InvalidArgument):
        resolv_conf(bad)
    with pytest.raises(errors.InvalidArgument):
        resolv_conf(options=bad)


def test_parse_upstream() -> None:
    assert parse_upstream("192.0.2.1") == ("192.0.2.1", 53)
    assert parse_upstream("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_upstream("2001:db8::1") == ("2001:db8::1", 53)
    assert parse_upstream("[2001:db8::1]:54") == ("2001:db8::1", 54)
    for bad in ("dns.example", "1.2.3.4:x", "1.2.3.4:0", "1.2.3.4:70000", ""):
        with pytest.raises(errors.InvalidArgument):
            parse_upstream(bad)


def test_read_upstreams_skips_loopback(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# comment\nsearch example\nnameserver 127.0.0.53\nnameserver 192.0.2.1\n"
        "nameserver ::1\nnameserver 2001:db8::53\nnameserver bogus\noptions edns0\n"
    )
    assert read_upstreams(conf, fallback=None) == [("192.0.2.1", 53), ("2001:db8::53", 53)]


def test_read_upstreams_falls_back_to_systemd_resolved(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.53\n")
    real = tmp_path / "real.conf"
    real.write_text("nameserver 192.0.2.9\n")
    assert read_upstreams(conf, fallback=real) == [("192.0.2.9", 53)]
    assert read_upstreams(conf, fallback=tmp_path / "missing") == []
    assert read_upstreams(tmp_path / "missing", fallback=None) == []
