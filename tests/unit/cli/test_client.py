"""The client's pure parts: requests built from flags, hosts, and failures mapped to
what the user sees (one line, docker's exit codes)."""

from __future__ import annotations

import io
from typing import IO, cast

import grpc
import pytest

from api import engine_pb2 as pb
from cli import client
from cli.client import CannotConnect, CliError, ContainerSpec, DaemonError
from cli.parse import MountSpec, PortSpec, RestartSpec

pytestmark = pytest.mark.unit


def test_minimal_config_keeps_the_daemons_defaults():
    config = client.build_container_config(ContainerSpec(image="busybox"))
    assert config.image == "busybox"
    assert list(config.cmd) == [] and list(config.entrypoint) == []
    assert not config.entrypoint_set and not config.auto_remove
    assert config.stop_timeout == -1 and config.network == "bridge"
    assert config.restart.name == "no"
    assert config.resources == pb.Resources()


def test_full_config():
    spec = ContainerSpec(
        image="busybox",
        cmd=("ls", "-l"),
        name="web",
        entrypoint="sh",
        env=("A=1",),
        workdir="/tmp",
        user="nobody",
        hostname="box",
        mounts=(
            MountSpec("bind", "/srv", "/data", read_only=True),
            MountSpec("tmpfs", "", "/t", tmpfs_size=1024, tmpfs_mode=0o755),
        ),
        read_only=True,
        memory_bytes=512 << 20,
        nano_cpus=1_500_000_000,
        pids_limit=10,
        cap_add=("NET_ADMIN",),
        cap_drop=("ALL",),
        restart=RestartSpec("on-failure", 3),
        stop_signal="SIGINT",
        stop_timeout=5,
        network="host",
        ports=(PortSpec("127.0.0.1", 8080, 80, "udp"),),
        labels=(("a", "b"),),
        auto_remove=True,
    )
    config = client.build_container_config(spec)
    assert list(config.cmd) == ["ls", "-l"]
    assert list(config.entrypoint) == ["sh"] and config.entrypoint_set
    assert config.mounts[0] == pb.Mount(type="bind", source="/srv", target="/data", read_only=True)
    assert config.mounts[1] == pb.Mount(
        type="tmpfs", target="/t", tmpfs_size=1024, tmpfs_mode=0o755
    )
    assert config.resources == pb.Resources(
        memory_bytes=512 << 20, nano_cpus=1_500_000_000, pids_limit=10
    )
    assert config.restart == pb.RestartPolicy(name="on-failure", max_retries=3)
    assert config.ports[0] == pb.PortBinding(
        host_ip="127.0.0.1", host_port=8080, container_port=80, protocol="udp"
    )
    assert dict(config.labels) == {"a": "b"}
    assert (config.stop_signal, config.stop_timeout, config.network) == ("SIGINT", 5, "host")
    assert config.read_only and config.auto_remove


def test_empty_entrypoint_resets_the_images():
    config = client.build_container_config(ContainerSpec(image="busybox", entrypoint=""))
    assert list(config.entrypoint) == [] and config.entrypoint_set


def test_import_header():
    header = client.import_header("app:1", changes=["CMD x"], message="m")
    assert header == pb.ImageImportRequest(reference="app:1", changes=["CMD x"], message="m")


def test_grpc_targets():
    assert client.grpc_target("unix:///run/p.sock") == ("unix:///run/p.sock", "/run/p.sock")
    assert client.grpc_target("tcp://10.0.0.1:2377") == ("10.0.0.1:2377", None)
    for bad in ("bogus", "unix://relative", "tcp://nohost", "/run/p.sock"):
        with pytest.raises(CliError, match="invalid host"):
            client.grpc_target(bad)


def test_missing_socket_cannot_connect(tmp_path):
    host = f"unix://{tmp_path}/none.sock"
    with pytest.raises(CannotConnect) as err:
        client.connect(host)
    assert err.value.message == (
        f"Cannot connect to the pyswarm daemon at {host}. Is the daemon running?"
    )


def test_exit_code_hint():
    assert client.exit_code_hint((("pyswarm-exit-code", "127"),)) == 127
    assert client.exit_code_hint((("other", "1"), ("pyswarm-exit-code", b"126"))) == 126
    assert client.exit_code_hint((("pyswarm-exit-code", "x"),)) is None
    assert client.exit_code_hint(None) is None


class FakeRpcError(grpc.RpcError, grpc.Call):
    def __init__(self, code, details, trailing=()):
        self._code, self._details, self._trailing = code, details, trailing

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailing

    def initial_metadata(self):
        return ()

    def is_active(self):
        return False

    def time_remaining(self):
        return None

    def cancel(self):
        return False

    def add_callback(self, callback):
        return False


HOST = "unix:///run/pyswarm/pyswarm.sock"


def test_daemon_errors_keep_the_daemons_words():
    err = client.daemon_error(HOST, FakeRpcError(grpc.StatusCode.NOT_FOUND, "No such container: x"))
    assert isinstance(err, DaemonError)
    assert err.message == "Error response from daemon: No such container: x"
    assert err.status == "NOT_FOUND" and err.exit_code == 1 and err.hinted_exit_code is None


def test_daemon_unavailable_is_not_a_connection_failure():
    err = client.daemon_error(HOST, FakeRpcError(grpc.StatusCode.UNAVAILABLE, "not a manager"))
    assert err.message == "Error response from daemon: not a manager"


@pytest.mark.parametrize(
    "details",
    [
        "failed to connect to all addresses; last error: UNKNOWN: unix:/x: Connection refused",
        "failed to connect to all addresses; last error: UNKNOWN: unix:/x: No such file",
    ],
)
def test_refused_socket_cannot_connect(details):
    err = client.daemon_error(HOST, FakeRpcError(grpc.StatusCode.UNAVAILABLE, details))
    assert isinstance(err, CannotConnect)


def test_permission_denied_socket():
    details = "failed to connect to all addresses; last error: UNKNOWN: unix:/x: Permission denied"
    err = client.daemon_error(HOST, FakeRpcError(grpc.StatusCode.UNAVAILABLE, details))
    assert err.message.startswith("permission denied while trying to connect")


def raise_in(failure, error):
    with pytest.raises(CliError) as caught, client.exit_codes(failure):
        raise error
    return caught.value.exit_code


def test_run_exit_codes():
    hinted = DaemonError("not found", status="NOT_FOUND", hinted_exit_code=127)
    plain = DaemonError("No such image", status="NOT_FOUND", hinted_exit_code=None)
    assert raise_in(125, hinted) == 127
    assert raise_in(125, plain) == 125
    assert raise_in(125, CannotConnect(HOST)) == 125
    assert raise_in(1, DaemonError("x", status="UNKNOWN", hinted_exit_code=None)) == 1


def test_chunks_are_one_mebibyte_and_keep_read_errors():
    data = b"x" * (client.CHUNK_SIZE + 10)
    chunks = client.Chunks(io.BytesIO(data))
    assert [len(c) for c in chunks] == [client.CHUNK_SIZE, 10]
    chunks.check()

    class Broken(io.RawIOBase):
        def read(self, size=-1):
            raise OSError(5, "Input/output error")

    broken = client.Chunks(cast(IO[bytes], Broken()))
    assert list(broken) == []
    with pytest.raises(CliError, match="read error: Input/output error"):
        broken.check()
