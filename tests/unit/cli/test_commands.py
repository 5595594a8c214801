"""The commands' pure parts: docker's rows and documents from API messages, the
multi-object loop, prompts, prune output and atomic saves."""

from __future__ import annotations

import io
import json
from typing import cast

import pytest

from api import engine_pb2 as pb
from cli.client import DaemonError, Engine
from cli.commands import common, containers, images, system, volumes

pytestmark = pytest.mark.unit

NOW = 1_700_000_000.0


def test_ps_row():
    summary = pb.ContainerSummary(
        id="b" * 64,
        name="/web",
        image="busybox",
        command="sh -c 'while true; do sleep 1; done'",
        created=int(NOW - 125),
        state="running",
        status="Up 2 minutes",
        ports="0.0.0.0:8080->80/tcp",
        labels={"x": "1", "a": "2"},
    )
    row = containers.container_row(summary, now=NOW, trunc=True)
    assert row["ID"] == "b" * 12 and row["Names"] == "web"
    assert row["Command"] == '"sh -c \'while true; …"'
    assert row["RunningFor"] == "2 minutes ago"
    assert (row["State"], row["Status"]) == ("running", "Up 2 minutes")
    assert row["Labels"] == "a=2,x=1" and row["Ports"] == "0.0.0.0:8080->80/tcp"
    full = containers.container_row(summary, now=NOW, trunc=False)
    assert full["ID"] == "b" * 64
    assert full["Command"] == "\"sh -c 'while true; do sleep 1; done'\""


def test_stats_row():
    stats = pb.Stats(
        id="c" * 64, name="st", cpu_percent=1.234, memory_usage=1_544_000, memory_limit=32 << 20
    )
    row = containers.stats_row(stats, trunc=True)
    assert row["ID"] == "c" * 12 and row["Name"] == "st"
    assert row["CPUPerc"] == "1.23%" and row["MemPerc"] == "4.60%"
    assert row["MemUsage"] == "1.472MiB / 32MiB" and row["PIDs"] == "0"
    assert containers.stats_row(pb.Stats(), trunc=True)["MemPerc"] == "0.00%"


def test_env_merge_order():
    assert common.merge_env([["A=1"], ["B=2"]], ["A=3", None]) == ("A=1", "B=2", "A=3")


def test_split_reference():
    assert images.split_reference("busybox:latest") == ("busybox", "latest")
    assert images.split_reference("localhost:5000/app:1.0") == ("localhost:5000/app", "1.0")
    assert images.split_reference("localhost:5000/app") == ("localhost:5000/app", "<none>")
    assert images.split_reference("<none>:<none>") == ("<none>", "<none>")


def test_image_rows_one_per_tag():
    summary = pb.ImageSummary(
        id="sha256:" + "d" * 64,
        repo_tags=["busybox:latest", "bb:1"],
        created=int(NOW - 20 * 86400),
        size=4_261_550,
    )
    rows = images.image_rows(summary, now=NOW, trunc=True)
    assert [(r["Repository"], r["Tag"]) for r in rows] == [("busybox", "latest"), ("bb", "1")]
    assert rows[0]["ID"] == "d" * 12 and rows[0]["Size"] == "4.26MB"
    assert rows[0]["CreatedSince"] == "2 weeks ago"
    untagged = images.image_rows(pb.ImageSummary(id="sha256:e"), now=NOW, trunc=False)
    assert [(r["Repository"], r["Tag"], r["ID"]) for r in untagged] == [
        ("<none>", "<none>", "sha256:e")
    ]


def test_image_filter():
    row = {"Repository": "busybox", "Tag": "latest"}
    assert images.matches(row, None)
    assert images.matches(row, "busybox")
    assert images.matches(row, "busybox:latest")
    assert not images.matches(row, "busybox:1")
    assert not images.matches(row, "alpine")


def test_image_lines():
    assert images.prune_line("sha256:abc") == "deleted: sha256:abc"
    assert images.prune_line("busybox:latest") == "untagged: busybox:latest"
    assert images.loaded_line("Loaded image: busybox:latest") == "Loaded image: busybox:latest"
    assert images.loaded_line("busybox:latest") == "Loaded image: busybox:latest"
    assert images.loaded_line("sha256:abc") == "Loaded image ID: sha256:abc"


def test_removal_lines(capsys):
    images.print_removal(pb.ImageRemoveResponse(untagged=["bb:1"], deleted=["sha256:d"]))
    assert capsys.readouterr().out == "Untagged: bb:1\nDeleted: sha256:d\n"


def test_save_is_atomic(tmp_path):
    target = tmp_path / "out.tar"
    images.save_to_file([b"ab", b"cd"], str(target))
    assert target.read_bytes() == b"abcd"

    def broken():
        yield b"partial"
        raise DaemonError("gone", status="UNKNOWN", hinted_exit_code=None)

    with pytest.raises(DaemonError):
        images.save_to_file(broken(), str(tmp_path / "half.tar"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tar"]


def test_volume_row_and_doc():
    volume = pb.Volume(name="data", mountpoint="/v/data/_data", created=int(NOW), labels={"k": "v"})
    row = volumes.volume_row(volume)
    assert (row["Driver"], row["Name"], row["Labels"], row["Scope"]) == (
        "local",
        "data",
        "k=v",
        "local",
    )
    doc = volumes.volume_doc(volume)
    assert doc["Name"] == "data" and doc["Labels"] == {"k": "v"} and doc["Options"] is None
    assert volumes.volume_doc(pb.Volume(name="x"))["Labels"] is None


def test_info_lines_use_dockers_labels():
    doc = {
        "Containers": 3,
        "ContainersRunning": 1,
        "ContainersPaused": 0,
        "ContainersStopped": 2,
        "Images": 4,
        "ServerVersion": "0.1.0",
        "Driver": "overlay",
        "CgroupVersion": "2",
        "DefaultRuntime": "crun",
        "Swarm": {"LocalNodeState": "inactive"},
        "MemTotal": 8_232_423_424,
        "DockerRootDir": "/var/lib/pyswarm",
        "Labels": ["a=b"],
        "Debug": False,
    }
    assert system.info_lines(doc) == [
        " Containers: 3",
        "  Running: 1",
        "  Paused: 0",
        "  Stopped: 2",
        " Images: 4",
        " Server Version: 0.1.0",
        " Storage Driver: overlay",
        " Cgroup Version: 2",
        " Runtime: crun",
        " Swarm: inactive",
        " Total Memory: 7.667GiB",
        " Data Root: /var/lib/pyswarm",
        " Labels:",
        "  a=b",
        " Debug: false",
    ]


def test_version_lines():
    info = pb.VersionInfo(
        version="0.1.0", api_version="1.0", python="3.11.7", runtime="crun",
        runtime_version="1.14", os="linux", arch="amd64",
    )  # fmt: skip
    lines = system.server_version_lines(info)
    assert lines[:3] == ["Server: pyswarm Engine", " Engine:", "  Version:          0.1.0"]
    assert " crun:" in lines and "  OS/Arch:          linux/amd64" in lines
    client = system.client_version_lines()
    assert client[0] == "Client:" and client[1].startswith(" Version:           ")


def not_found(what: str) -> DaemonError:
    return DaemonError(f"No such {what}", status="NOT_FOUND", hinted_exit_code=None)


class FakeEngine:
    def __init__(self, *, container=None, image=None, volume=None):
        self.found = {"container": container, "image": image, "volume": volume}

    def _get(self, kind):
        if self.found[kind] is None:
            raise not_found(kind)
        return self.found[kind]

    def container_inspect(self, name):
        return json.dumps(self._get("container"))

    def image_inspect(self, name):
        return json.dumps(self._get("image"))

    def volume_inspect(self, name):
        return self._get("volume")


def fake(engine: FakeEngine) -> Engine:
    return cast(Engine, engine)


def test_inspect_tries_containers_images_then_volumes():
    engine = fake(FakeEngine(image={"Id": "sha256:x"}, volume=pb.Volume(name="v")))
    assert system.find_object(engine, "x", None) == {"Id": "sha256:x"}
    assert system.find_object(engine, "v", "volume")["Name"] == "v"
    with pytest.raises(DaemonError, match="No such container"):
        system.find_object(engine, "x", "container")
    with pytest.raises(DaemonError, match="No such object: x"):
        system.find_object(fake(FakeEngine()), "x", None)


def test_inspect_stops_at_other_errors():
    class Broken(FakeEngine):
        def container_inspect(self, name):
            raise DaemonError("boom", status="INTERNAL", hinted_exit_code=None)

    with pytest.raises(DaemonError, match="boom"):
        system.find_object(fake(Broken(image={})), "x", None)


def test_each_reports_every_failure_and_goes_on(capsys):
    def action(name: str) -> None:
        if name == "bad":
            raise not_found("container: bad")

    assert common.each(["a", "bad", "b"], action) == 1
    captured = capsys.readouterr()
    assert captured.out == "a\nb\n"
    assert captured.err == "Error response from daemon: No such container: bad\n"
    assert common.each(["a"], action, echo=False) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("answer", "yes"), [("y\n", True), ("YES\n", True), ("n\n", False), ("", False)]
)
def test_confirm(monkeypatch, capsys, answer, yes):
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    assert common.confirm("WARNING! This will remove all stopped containers.") is yes
    assert capsys.readouterr().out.endswith("Are you sure you want to continue? [y/N] ")


def test_prune_output(capsys):
    common.print_prune("Containers", ["c1", "c2"], 1234)
    assert capsys.readouterr().out == (
        "Deleted Containers:\nc1\nc2\n\nTotal reclaimed space: 1.234kB\n"
    )
    common.print_prune("Volumes", [], 0)
    assert capsys.readouterr().out == "Total reclaimed space: 0B\n"
