"""`pyswarm lab`: hosts in namespaces on a switch, a daemon each, and a clean `down`.

Every lab here is made with --no-swarm (forming the swarm is e2e's business) and a
name of its own, and is taken down by the test or, if it fails first, by the fixture.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from deploy import lab as lablib
from tests.daemons import PYSWARM, wait_for

pytestmark = pytest.mark.integration

KEYS = {"name", "role", "address", "netns", "pid", "host"}
PING = ["ping"] if shutil.which("ping") else ["busybox", "ping"]


def lab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYSWARM, "lab", *args], capture_output=True, text=True, timeout=timeout
    )  # fmt: skip


def ok(*args: str) -> str:
    res = lab(*args)
    assert res.returncode == 0, f"pyswarm lab {' '.join(args)}: {res.stderr}"
    return res.stdout


def hosts(name: str) -> dict[str, dict[str, object]]:
    rows = [json.loads(line) for line in ok("ls", "--name", name, "--format", "json").splitlines()]
    return {str(row["name"]): row for row in rows}


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")  # a zombie is gone


def leftovers(name: str, pids: list[int]) -> list[str]:
    prefix = f"pyswarm-lab-{name}-"
    found = [f"netns {ns}" for ns in os.listdir("/run/netns") if ns.startswith(prefix)]
    found += [f"pid {pid}" for pid in pids if running(pid)]
    found += [
        f"mount {line.split()[4]}"
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if f"/lab/{name}/" in line.split()[4] or line.split()[4].endswith(f"/lab/{name}")
    ]
    cgroups = Path("/sys/fs/cgroup")
    found += [f"cgroup {p}" for p in [*cgroups.glob(f"{prefix}*"), *cgroups.glob(f"*/{prefix}*")]]
    found += [f"dir {d}" for d in (lablib.RUN_ROOT / name, lablib.DATA_ROOT / name) if d.exists()]
    return found


@pytest.fixture
def name() -> Iterator[str]:
    made = "t" + secrets.token_hex(3)
    yield made
    lab("down", "--name", made)  # after a failed test; a no-op after a passing one


def test_up_ls_exec_down(name: str) -> None:
    ok("up", "--managers", "2", "--workers", "1", "--no-swarm", "--name", name)
    found = hosts(name)
    assert sorted(found) == ["m1", "m2", "w1"]
    assert all(set(row) == KEYS for row in found.values())
    assert [found[h]["role"] for h in ("m1", "m2", "w1")] == ["manager", "manager", "worker"]
    addresses = {IPv4Address(str(row["address"])) for row in found.values()}
    assert len(addresses) == 3
    assert all(a in IPv4Network("198.18.0.0/15") for a in addresses)
    pids = [int(str(row["pid"])) for row in found.values()]
    assert all(running(pid) for pid in pids)

    # The hosts reach one another over the switch, and nothing else.
    ok("exec", "--name", name, "m1", "--", *PING, "-c1", "-W1", str(found["w1"]["address"]))
    routes = ok("exec", "--name", name, "m1", "--", "ip", "route")
    assert "198.18.0.0/15 dev eth0" in routes and "default" not in routes
    # Each host's CLI talks to its own daemon, and exec hands back the exit code.
    assert ok("exec", "--name", name, "w1", "--", PYSWARM, "ps").startswith("CONTAINER ID")
    env = ok("exec", "--name", name, "w1", "--", "sh", "-c", "echo $PYSWARM_HOST")
    assert env.strip() == found["w1"]["host"]
    assert lab("exec", "--name", name, "m2", "--", "sh", "-c", "exit 3").returncode == 3

    ok("down", "--name", name)
    assert leftovers(name, pids) == []
    ok("down", "--name", name)  # idempotent


@pytest.mark.parametrize("bad", ["Bad_Name", "-x", "x-", "a" * 25])
def test_bad_name_is_refused(bad: str) -> None:
    res = lab("up", "--managers", "1", "--workers", "0", "--no-swarm", f"--name={bad}")
    assert res.returncode == 1
    assert res.stderr.startswith("pyswarm lab: invalid lab name") and res.stderr.count("\n") == 1
    assert not (lablib.RUN_ROOT / bad).exists()


def test_up_twice_is_refused(name: str) -> None:
    ok("up", "--managers", "1", "--workers", "0", "--no-swarm", "--name", name)
    pid = int(str(hosts(name)["m1"]["pid"]))
    res = lab("up", "--managers", "1", "--workers", "0", "--no-swarm", "--name", name)
    assert res.returncode == 1 and "already exists" in res.stderr
    assert res.stderr.count("\n") == 1
    assert running(pid) and hosts(name)["m1"]["pid"] == pid  # the first lab is untouched
    ok("down", "--name", name)
    assert leftovers(name, [pid]) == []


def test_down_cleans_a_half_made_lab(name: str) -> None:
    ok("up", "--managers", "1", "--workers", "1", "--no-swarm", "--name", name)
    pids = [int(str(row["pid"])) for row in hosts(name).values()]
    os.kill(pids[1], signal.SIGKILL)  # w1's daemon dies under the lab
    wait_for(lambda: not running(pids[1]), timeout=10, what="w1's daemon to die")
    ok("down", "--name", name)
    assert leftovers(name, pids) == []


def test_down_from_the_state_alone(name: str) -> None:
    # As `up` leaves it when it dies right after recording its plan: nothing made yet.
    planned = lablib.plan(name, managers=1, workers=1)
    planned.run_dir.mkdir(parents=True)
    planned.save()
    ok("down", "--name", name)
    assert leftovers(name, []) == []
    assert lab("ls", "--name", name).returncode == 1


def test_down_after_the_state_is_lost(name: str) -> None:
    # As after a reboot wiped /run but not /var/lib, or with the daemons still up.
    ok("up", "--managers", "1", "--workers", "1", "--no-swarm", "--name", name)
    pids = [int(str(row["pid"])) for row in hosts(name).values()]
    (lablib.RUN_ROOT / name / "state.json").unlink()
    res = lab("up", "--managers", "1", "--workers", "0", "--no-swarm", "--name", name)
    assert res.returncode == 1 and "already exists" in res.stderr
    ok("down", "--name", name)
    assert leftovers(name, pids) == []
