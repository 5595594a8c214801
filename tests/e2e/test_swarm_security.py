"""Swarm security as a user meets it: refused joins, foreign and wrong-role certificates,
plaintext on the cluster port, and the guards on leave/init/node ls.

One lab for the module (`deploy.lab.up(..., swarm=False)`, so every join is the test's
own): m1 inits the swarm and w1 joins it as a worker; w2 is a spare host that tries
the refused joins (and joins for real, with a rotated token, near the end); w3 is a
daemon that is never in a swarm. Tests run in file order and later ones rely on the
state earlier ones leave. All traffic is between lab namespaces (198.18.0.0/15): the
gRPC probes run as a small python program inside w3's namespace (`nsenter --net=`).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from api import pki
from deploy import lab as lablib
from manager.ca import RootCA
from tests.daemons import wait_for

pytestmark = pytest.mark.e2e

M1 = "198.18.0.11"
W1 = "198.18.1.11"
W2 = "198.18.1.12"
CLUSTER = f"{M1}:2377"
READY_TIMEOUT = 30.0


# -- helpers ------------------------------------------------------------------------


def run(
    lab: lablib.Lab, node: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`pyswarm ARGS` on a lab host, exit code and both streams kept."""
    argv, env = lablib.command_for(lab.host(node), [lablib._pyswarm(), *args])
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def ok(lab: lablib.Lab, node: str, *args: str) -> str:
    res = run(lab, node, *args)
    assert res.returncode == 0, f"{node}: pyswarm {' '.join(args)}: {res.stderr}"
    return res.stdout


def refused(lab: lablib.Lab, node: str, *args: str) -> str:
    """Run a command that must fail with exit 1 and a one-line error; that line."""
    res = run(lab, node, *args)
    assert res.returncode == 1, (
        f"{node}: pyswarm {' '.join(args)} exited {res.returncode}: {res.stdout!r} {res.stderr!r}"
    )
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, f"want a one-line error, got {res.stderr!r}"
    return lines[0]


def nodes(lab: lablib.Lab) -> list[dict[str, object]]:
    out = ok(lab, "m1", "node", "ls", "--format", "json")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def swarm_dir(lab: lablib.Lab, node: str) -> Path:
    return Path(lab.host(node).data_root) / "swarm"


def certs(lab: lablib.Lab, node: str) -> dict[str, str]:
    d = swarm_dir(lab, node) / "certificates"
    return {
        k: (d / f).read_text()
        for k, f in (("key", "node.key"), ("cert", "node.crt"), ("ca", "ca.crt"))
    }


def worker_token(lab: lablib.Lab) -> str:
    return ok(lab, "m1", "swarm", "join-token", "-q", "worker").strip()


def join(
    lab: lablib.Lab, node: str, token: str, remote: str = CLUSTER, *, advertise: str | None = W2
) -> list[str]:
    args = ["swarm", "join", "--token", token]
    if advertise:
        args += ["--advertise-addr", advertise]
    return [*args, remote]


def assert_refused_join(lab: lablib.Lab, node: str, args: list[str], expect: str) -> str:
    """The join fails with `expect` in its one-line error, no node object appears on
    the manager, and the refused host keeps no swarm state or certificate."""
    before = len(nodes(lab))
    line = refused(lab, node, *args)
    assert expect in line, line
    assert len(nodes(lab)) == before
    assert not swarm_dir(lab, node).exists(), (
        f"{node} kept {sorted(swarm_dir(lab, node).rglob('*'))}"
    )
    return line


# A gRPC client run inside a lab namespace; reads its orders as JSON on stdin and
# prints one JSON line: {"ok": true, ...} or {"ok": false, "code": ..., "details": ...}.
PROBE = r"""
import json, sys
import grpc
from api import pki, swarm_pb2, swarm_pb2_grpc
o = json.load(sys.stdin)
enc = lambda s: s.encode() if s else None
if o["mode"] == "insecure":
    ch = grpc.insecure_channel(o["target"])
else:
    creds = pki.channel_credentials(enc(o["ca"]), cert_pem=enc(o.get("cert")), key_pem=enc(o.get("key")))
    ch = grpc.secure_channel(o["target"], creds, options=pki.channel_options())
try:
    if o["call"] == "ListNodes":
        r = swarm_pb2_grpc.ControlStub(ch).ListNodes(swarm_pb2.Empty(), timeout=5)
        out = {"ok": True, "nodes": len(r.nodes)}
    else:
        r = swarm_pb2_grpc.DispatcherStub(ch).RenewCertificate(
            swarm_pb2.CertificateRequest(csr_pem=o["csr"].encode()), timeout=5)
        out = {"ok": True, "cert": r.cert_pem.decode(), "role": int(r.role)}
except grpc.RpcError as e:
    out = {"ok": False, "code": e.code().name, "details": e.details()}
print(json.dumps(out))
"""


def probe(lab: lablib.Lab, **orders: str) -> dict[str, object]:
    argv, env = lablib.command_for(lab.host("w3"), [sys.executable, "-c", PROBE])
    res = subprocess.run(
        argv, env=env, input=json.dumps(orders), capture_output=True, text=True, timeout=30,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    result: dict[str, object] = json.loads(res.stdout.strip().splitlines()[-1])
    return result


def other_secret(secret: str) -> str:
    while True:
        new = pki.new_secret()
        if new != secret:
            return new


# -- the lab ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab() -> Iterator[lablib.Lab]:
    name = "s" + secrets.token_hex(3)[:5]
    try:
        the_lab = lablib.up(name, managers=1, workers=3, heartbeat="1s", swarm=False)
        ok(the_lab, "m1", "swarm", "init", "--advertise-addr", M1, "--dispatcher-heartbeat", "1s")
        ok(the_lab, "w1", *join(the_lab, "w1", worker_token(the_lab), advertise=W1))

        def both_ready() -> bool:
            listed = nodes(the_lab)
            return len(listed) == 2 and all(n["Status"] == "Ready" for n in listed)

        wait_for(both_ready, timeout=READY_TIMEOUT, what="m1 and w1 Ready", interval=0.2)
        yield the_lab
    finally:
        lablib.down(name)


# -- refused joins ------------------------------------------------------------------


def test_forged_token_is_refused(lab: lablib.Lab) -> None:
    assert_refused_join(lab, "w2", join(lab, "w2", "garbage"), "invalid join token")


def test_wrong_secret_is_refused(lab: lablib.Lab) -> None:
    real = worker_token(lab)
    forged = real[: -pki.SECRET_LENGTH] + other_secret(real[-pki.SECRET_LENGTH :])
    assert_refused_join(
        lab, "w2", join(lab, "w2", forged), "A valid join token is necessary to join this cluster"
    )


def test_token_of_another_swarm_is_refused(lab: lablib.Lab) -> None:
    digest = pki._base36(secrets.randbits(256), width=pki.DIGEST_LENGTH)
    token = pki.format_token(digest, worker_token(lab)[-pki.SECRET_LENGTH :])
    assert_refused_join(lab, "w2", join(lab, "w2", token), "remote CA does not match fingerprint")


@pytest.mark.parametrize(
    "remote",
    [f"{W1}:2377", "198.18.0.250:2377"],
    ids=["worker-address", "nobody-there"],
)
def test_join_where_no_manager_listens(lab: lablib.Lab, remote: str) -> None:
    started = time.monotonic()
    line = assert_refused_join(lab, "w2", join(lab, "w2", worker_token(lab), remote), "")
    assert time.monotonic() - started < 12, "the refusal took too long"
    assert remote.rpartition(":")[0] in line, line
    assert "manager" in line, line


def test_join_without_advertise_addr_uses_the_one_address(lab: lablib.Lab) -> None:
    """What `swarm init` prints: `pyswarm swarm join --token T m1:2377`, no
    --advertise-addr. w2 has one non-loopback address, so that is the one to use; a
    wrong secret must be refused as such, not by a crash on the way."""
    real = worker_token(lab)
    forged = real[: -pki.SECRET_LENGTH] + other_secret(real[-pki.SECRET_LENGTH :])
    assert_refused_join(
        lab,
        "w2",
        join(lab, "w2", forged, advertise=None),
        "A valid join token is necessary to join this cluster",
    )


def test_joining_twice_is_refused(lab: lablib.Lab) -> None:
    before = len(nodes(lab))
    cert = certs(lab, "w1")["cert"]
    line = refused(lab, "w1", *join(lab, "w1", worker_token(lab), advertise=W1))
    assert "This node is already part of a swarm" in line, line
    assert len(nodes(lab)) == before
    assert certs(lab, "w1")["cert"] == cert, "a refused join replaced w1's certificate"


# -- the cluster port ---------------------------------------------------------------


def test_certificate_of_another_ca_is_refused(lab: lablib.Lab) -> None:
    now = datetime.now(UTC)
    foreign = RootCA.create(now=now)
    key = pki.generate_key()
    m1_id = next(n["ID"] for n in nodes(lab) if n["Hostname"] == "m1")
    cert = foreign.issue(
        pki.make_csr(key), node_id=str(m1_id), role="manager", expiry=timedelta(hours=1), now=now
    )
    real_ca = certs(lab, "m1")["ca"]
    # Trusting the real root (so the client does not stop first), presenting the forgery.
    got = probe(
        lab, mode="tls", target=CLUSTER, call="ListNodes",
        ca=real_ca, cert=foreign.server_cert_chain(cert).decode(), key=pki.key_pem(key).decode(),
    )  # fmt: skip
    assert got["ok"] is False and got["code"] == "UNAVAILABLE", got
    # And a client that only trusts the foreign root cannot talk to m1 either.
    got = probe(
        lab, mode="tls", target=CLUSTER, call="ListNodes",
        ca=foreign.cert_pem.decode(), cert=cert.decode(), key=pki.key_pem(key).decode(),
    )  # fmt: skip
    assert got["ok"] is False and got["code"] == "UNAVAILABLE", got


def test_worker_certificate_may_not_use_the_control_api(lab: lablib.Lab) -> None:
    w1 = certs(lab, "w1")
    got = probe(lab, mode="tls", target=CLUSTER, call="ListNodes", **w1)
    assert got["ok"] is False and got["code"] == "PERMISSION_DENIED", got
    assert "worker" in str(got["details"]), got


def test_worker_certificate_may_use_the_dispatcher(lab: lablib.Lab) -> None:
    w1 = certs(lab, "w1")
    key = pki.generate_key()
    got = probe(lab, mode="tls", target=CLUSTER, call="Renew", csr=pki.make_csr(key).decode(), **w1)
    assert got["ok"] is True, got
    cert = str(got["cert"]).encode()
    info = pki.cert_info(cert)
    assert info.role is pki.Role.WORKER
    assert info.node_id == pki.cert_info(w1["cert"].encode()).node_id
    assert pki.issued_by(cert, w1["ca"].encode())


def test_plaintext_on_the_cluster_port_is_refused(lab: lablib.Lab) -> None:
    got = probe(lab, mode="insecure", target=CLUSTER, call="ListNodes")
    assert got["ok"] is False and got["code"] == "UNAVAILABLE", got


def test_tls_without_a_client_certificate_is_refused(lab: lablib.Lab) -> None:
    ca = certs(lab, "m1")["ca"]
    got = probe(lab, mode="tls", target=CLUSTER, call="ListNodes", ca=ca)
    assert got["ok"] is False, got
    # The join port serves NodeCA only: no control API without a certificate there.
    got = probe(lab, mode="tls", target=f"{M1}:2379", call="ListNodes", ca=ca)
    assert got["ok"] is False and got["code"] == "UNIMPLEMENTED", got


# -- guards of the CLI --------------------------------------------------------------


def test_node_ls_on_a_worker(lab: lablib.Lab) -> None:
    line = refused(lab, "w1", "node", "ls")
    assert "This node is not a swarm manager. Worker nodes can't be used" in line, line


def test_node_ls_outside_any_swarm(lab: lablib.Lab) -> None:
    line = refused(lab, "w3", "node", "ls")
    assert 'Use "pyswarm swarm init" or "pyswarm swarm join"' in line, line


def test_init_twice_is_refused(lab: lablib.Lab) -> None:
    before = nodes(lab)
    line = refused(lab, "m1", "swarm", "init", "--advertise-addr", M1)
    assert "This node is already part of a swarm" in line, line
    assert [n["ID"] for n in nodes(lab)] == [n["ID"] for n in before]


def test_last_manager_may_not_leave_without_force(lab: lablib.Lab) -> None:
    line = refused(lab, "m1", "swarm", "leave")
    assert "Removing the last manager erases all current state of the swarm" in line, line
    assert len(nodes(lab)) == 2
    assert (swarm_dir(lab, "m1") / "certificates" / "node.crt").exists()


# -- token rotation and leaving (these change the swarm: last) ----------------------


def test_rotated_token(lab: lablib.Lab) -> None:
    old = worker_token(lab)
    out = ok(lab, "m1", "swarm", "join-token", "--rotate", "worker")
    assert "Successfully rotated worker join token" in out, out
    new = worker_token(lab)
    assert new != old and new[: -pki.SECRET_LENGTH] == old[: -pki.SECRET_LENGTH]
    assert_refused_join(
        lab, "w2", join(lab, "w2", old), "A valid join token is necessary to join this cluster"
    )
    before = len(nodes(lab))
    out = ok(lab, "w2", *join(lab, "w2", new))
    assert "This node joined a swarm as a worker." in out, out
    assert len(nodes(lab)) == before + 1
    assert (swarm_dir(lab, "w2") / "certificates" / "node.crt").exists()


def test_worker_leaves(lab: lablib.Lab) -> None:
    out = ok(lab, "w1", "swarm", "leave")
    assert out.strip() == "Node left the swarm.", out
    assert not swarm_dir(lab, "w1").exists()
    line = refused(lab, "w1", "node", "ls")
    assert 'Use "pyswarm swarm init" or "pyswarm swarm join"' in line, line


def test_init_without_advertise_addr_uses_the_one_address(lab: lablib.Lab) -> None:
    """w3 has one non-loopback address (198.18.1.13): `swarm init` alone must use it.
    Last, because w3 becomes the manager of a swarm of its own (left at once)."""
    try:
        out = ok(lab, "w3", "swarm", "init")
        assert "Swarm initialized" in out, out
        assert "198.18.1.13:2377" in out, out
    finally:
        run(lab, "w3", "swarm", "leave", "--force")
