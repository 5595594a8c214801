"""Single-host networking through the CLI: the pyswarm0 bridge and -p publishing."""

from __future__ import annotations

import json

import pytest

from tests.daemons import wait_for

pytestmark = pytest.mark.integration


def _fetch(daemon, url: str) -> str:
    # busybox-static's `wget -T` segfaults: bound it with timeout(1) instead.
    res = daemon.in_netns("timeout", "5", "busybox", "wget", "-q", "-O", "-", url)
    return res.stdout if res.returncode == 0 else ""


def _serve(daemon, busybox, name: str, *extra: str) -> None:
    script = f"mkdir -p /www && echo hello from {name} > /www/index.html && httpd -f -p 80 -h /www"
    daemon.cli("run", "-d", "--name", name, *extra, busybox, "sh", "-c", script, check=True)


def test_published_port_answers_on_the_host(daemon, busybox):
    _serve(daemon, busybox, "web", "-p", "8080:80")
    ps = json.loads(daemon.cli("ps", "--format", "json", check=True).stdout.splitlines()[0])
    assert "8080->80/tcp" in ps["Ports"]
    body = wait_for(lambda: _fetch(daemon, "http://127.0.0.1:8080/"), timeout=10, what="httpd")
    assert body == "hello from web\n"
    daemon.cli("rm", "-f", "web", check=True)
    assert "vps" not in daemon.in_netns("ip", "-o", "link").stdout  # the veth goes at once
    nft = daemon.in_netns("nft", "list", "ruleset").stdout
    assert "8080" not in nft  # and so does its published port
    # The bridge and table go after the daemon's idle grace (1 s in these tests).
    wait_for(
        lambda: (
            "pyswarm0" not in daemon.in_netns("ip", "-o", "link").stdout
            and "pyswarm" not in daemon.in_netns("nft", "list", "tables").stdout
        ),
        timeout=10,
        what="the unused bridge and table to go",
    )


def test_containers_reach_each_other_on_the_bridge(daemon, busybox):
    _serve(daemon, busybox, "server")
    ip = json.loads(daemon.cli("inspect", "server", check=True).stdout)[0]["NetworkSettings"][
        "IPAddress"
    ]
    assert ip.startswith("172.30.")

    def fetched() -> str:
        res = daemon.cli(
            "run", "--rm", busybox, "timeout", "5", "wget", "-q", "-O", "-", f"http://{ip}/"
        )
        return str(res.stdout)

    assert wait_for(fetched, timeout=10, what="server") == "hello from server\n"


def test_port_conflict_is_refused_and_leaves_nothing(daemon, busybox):
    _serve(daemon, busybox, "first", "-p", "8081:80")
    res = daemon.cli("run", "--rm", "-p", "8081:80", busybox, "true")
    assert res.returncode == 125
    assert "port is already allocated" in res.stderr
    assert daemon.cli("ps", "-a", "-q").stdout.split() == [
        daemon.cli("ps", "-q", check=True).stdout.strip()
    ]
    links = daemon.in_netns("ip", "-o", "link").stdout
    assert links.count("vps") == 1  # only the first container's veth


def test_none_and_host_networks(daemon, busybox):
    res = daemon.cli("run", "--rm", "--network", "none", busybox, "ip", "-o", "link")
    assert [line.split(":")[1].strip() for line in res.stdout.splitlines()] == ["lo"]
    host_links = daemon.in_netns("ip", "-o", "link").stdout.count("\n")
    res = daemon.cli("run", "--rm", "--network", "host", busybox, "ip", "-o", "link")
    assert res.stdout.count("\n") == host_links
