"""The flag parsers: docker's syntax in, plain values out, docker's reasons on errors."""

from __future__ import annotations

import click
import pytest

from cli import parse
from cli.parse import FlagType, MountSpec, PortSpec, RestartSpec

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512m", 512 * 1024**2),
        ("1g", 1024**3),
        ("1G", 1024**3),
        ("64MiB", 64 * 1024**2),
        ("65536k", 64 * 1024**2),
        ("1.5g", int(1.5 * 1024**3)),
        ("100", 100),
        ("100b", 100),
        ("2 m", 2 * 1024**2),
    ],
)
def test_memory_sizes_are_binary(text, size):
    assert parse.parse_memory(text) == size


@pytest.mark.parametrize("text", ["12q", "", "m", "-1m", "1.2.3m", "1mm"])
def test_bad_memory_sizes(text):
    with pytest.raises(ValueError, match=f"invalid size: '{text}'"):
        parse.parse_memory(text)


def test_flag_type_reports_like_docker():
    option = click.Option(["-m", "--memory"], type=FlagType("BYTES", parse.parse_memory))
    with pytest.raises(click.UsageError) as err:
        option.type.convert("12q", option, None)
    assert err.value.message == (
        'invalid argument "12q" for "-m, --memory" flag: invalid size: \'12q\''
    )
    assert option.type.convert(5, option, None) == 5  # defaults pass through


@pytest.mark.parametrize(
    ("text", "nanos"), [("1.5", 1_500_000_000), ("0.5", 500_000_000), ("2", 2_000_000_000)]
)
def test_cpus(text, nanos):
    assert parse.parse_cpus(text) == nanos


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("abc", "failed to parse abc as a rational number"),
        ("-1", "failed to parse -1 as a rational number"),
        ("inf", "failed to parse inf as a rational number"),
        ("0.0000000001", "value is too precise"),
    ],
)
def test_bad_cpus(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse.parse_cpus(text)


def test_pids_limit_and_tail():
    assert parse.parse_pids_limit("12") == 12
    assert parse.parse_pids_limit("-1") == 0
    assert parse.parse_tail("all") == -1
    assert parse.parse_tail("5") == 5
    with pytest.raises(ValueError, match="invalid syntax"):
        parse.parse_tail("some")


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("no", RestartSpec("no")),
        ("", RestartSpec("no")),
        ("always", RestartSpec("always")),
        ("unless-stopped", RestartSpec("unless-stopped")),
        ("on-failure", RestartSpec("on-failure")),
        ("on-failure:3", RestartSpec("on-failure", 3)),
    ],
)
def test_restart_policies(text, policy):
    assert parse.parse_restart(text) == policy


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("sometimes", "invalid restart policy 'sometimes'"),
        ("always:3", "maximum retry count can only be used with 'on-failure'"),
        ("on-failure:x", "maximum retry count must be an integer"),
    ],
)
def test_bad_restart_policies(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse.parse_restart(text)


@pytest.mark.parametrize(
    ("text", "port"),
    [
        ("80", PortSpec("", 0, 80, "tcp")),
        ("8080:80", PortSpec("", 8080, 80, "tcp")),
        ("127.0.0.1:8080:80/udp", PortSpec("127.0.0.1", 8080, 80, "udp")),
        ("127.0.0.1::80", PortSpec("127.0.0.1", 0, 80, "tcp")),
        ("[::1]:8080:80", PortSpec("::1", 8080, 80, "tcp")),
        ("53/UDP", PortSpec("", 0, 53, "udp")),
    ],
)
def test_publish(text, port):
    assert parse.parse_publish(text) == port


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("8000-8010:80-90", "port ranges are not supported"),
        ("80/sctp", "invalid proto: sctp"),
        ("x:80", "invalid hostPort: x"),
        ("8080:0", "invalid containerPort: 0"),
        ("8080:70000", "invalid containerPort: 70000"),
        ("300.1.1.1:80:80", "invalid IP address: 300.1.1.1"),
        ("1:2:3:4", "invalid port format"),
        ("", "invalid port format"),
    ],
)
def test_bad_publish(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse.parse_publish(text)


@pytest.mark.parametrize(
    ("text", "mount"),
    [
        ("/srv:/data", MountSpec("bind", "/srv", "/data")),
        ("/srv:/data:ro", MountSpec("bind", "/srv", "/data", read_only=True)),
        ("data:/data", MountSpec("volume", "data", "/data")),
        ("data:/data:rw", MountSpec("volume", "data", "/data")),
        ("/anon", MountSpec("volume", "", "/anon")),
        ("bad/name:/data", MountSpec("volume", "bad/name", "/data")),  # the daemon judges
    ],
)
def test_volume_flag(text, mount):
    assert parse.parse_volume(text) == mount


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("data:rel", "mount path must be absolute"),
        (":/data", "invalid volume specification"),
        ("a:/b:ro:x", "invalid volume specification"),
        ("/a:/b:zz", "invalid mode: zz"),
    ],
)
def test_bad_volume_flag(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse.parse_volume(text)


@pytest.mark.parametrize(
    ("text", "mount"),
    [
        ("type=bind,source=/a,target=/b", MountSpec("bind", "/a", "/b")),
        ("type=bind,src=/a,dst=/b,readonly", MountSpec("bind", "/a", "/b", read_only=True)),
        ("type=bind,src=/a,destination=/b,ro=false", MountSpec("bind", "/a", "/b")),
        ("type=volume,target=/anon", MountSpec("volume", "", "/anon")),
        ("target=/v,source=v", MountSpec("volume", "v", "/v")),
        (
            "type=tmpfs,target=/t,tmpfs-size=64m,tmpfs-mode=1770",
            MountSpec("tmpfs", "", "/t", tmpfs_size=64 << 20, tmpfs_mode=0o1770),
        ),
    ],
)
def test_mount_flag(text, mount):
    assert parse.parse_mount(text) == mount


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("type=bind,source=/a", "target is required"),
        ("type=bind,target=/b", "source is required when specifying bind mounts"),
        ("type=nfs,target=/b", "type 'nfs' is not valid"),
        ("type=tmpfs,source=x,target=/b", "source is not supported for tmpfs"),
        ("type=bind,source=/a,target=/b,tmpfs-size=1m", "cannot mix 'tmpfs-\\*' options"),
        ("type=bind,source=/a,target=/b,colour=red", "unexpected key 'colour'"),
        ("type=bind,source=/a,target=/b,bogus", "invalid field 'bogus' must be a key=value"),
        ("type=bind,source=/a,target=/b,readonly=maybe", "invalid value for readonly"),
        ("type=tmpfs,target=/t,tmpfs-mode=9", "invalid mode: 9"),
    ],
)
def test_bad_mount_flag(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse.parse_mount(text)


@pytest.mark.parametrize(
    ("text", "mount"),
    [
        ("/run", MountSpec("tmpfs", "", "/run")),
        ("/run:size=64m", MountSpec("tmpfs", "", "/run", tmpfs_size=64 << 20)),
        (
            "/run:rw,noexec,nosuid,size=65536k,mode=755",
            MountSpec("tmpfs", "", "/run", tmpfs_size=64 << 20, tmpfs_mode=0o755),
        ),
        ("/run:ro", MountSpec("tmpfs", "", "/run", read_only=True)),
    ],
)
def test_tmpfs_flag(text, mount):
    assert parse.parse_tmpfs(text) == mount


@pytest.mark.parametrize(
    ("text", "reason"),
    [("run", "must be absolute"), ("/run:exec", "unsupported tmpfs option: 'exec'")],
)
def test_bad_tmpfs_flag(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse.parse_tmpfs(text)


def test_env_takes_unset_values_from_the_client():
    environ = {"HOME": "/root"}
    assert parse.parse_env("A=1", environ) == "A=1"
    assert parse.parse_env("A=", environ) == "A="
    assert parse.parse_env("A=b=c", environ) == "A=b=c"
    assert parse.parse_env("HOME", environ) == "HOME=/root"
    assert parse.parse_env("UNSET", environ) is None
    with pytest.raises(ValueError, match="invalid environment variable: =x"):
        parse.parse_env("=x", environ)
    with pytest.raises(ValueError, match="contains whitespaces"):
        parse.parse_env("A B=1", environ)


def test_env_file():
    text = "# comment\n\nA=1\n  B=two words \nHOME\nUNSET\n"
    assert parse.parse_env_file(text, {"HOME": "/root"}) == ["A=1", "B=two words ", "HOME=/root"]


def test_env_file_from_disk(tmp_path):
    path = tmp_path / "env"
    path.write_text("A=1\n")
    assert parse.read_env_file(str(path), {}) == ["A=1"]
    with pytest.raises(ValueError, match="no such file or directory"):
        parse.read_env_file(str(tmp_path / "missing"), {})


def test_labels():
    assert parse.parse_label("a=b") == ("a", "b")
    assert parse.parse_label("a") == ("a", "")
    assert parse.parse_label("a=b=c") == ("a", "b=c")
    with pytest.raises(ValueError, match="invalid label format"):
        parse.parse_label("=b")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10m", 600.0),
        ("1h30m", 5400.0),
        ("5s", 5.0),
        ("1.5h", 5400.0),
        ("300ms", 0.3),
        ("2h45m30.5s", 9930.5),
        ("0", 0.0),
    ],
)
def test_durations(text, seconds):
    assert parse.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "10x", "m", "1h 2m", "-5s"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse.parse_duration(text)


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("text", "since"),
    [
        ("10m", NOW - 600),
        ("1700000000", 1_700_000_000.0),
        ("1699999999.5", 1_699_999_999.5),
        ("0", 0.0),
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-14T22:13:20.123456789Z", 1_700_000_000.123456),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000.0),
    ],
)
def test_since(text, since):
    assert parse.parse_since(text, now=NOW) == pytest.approx(since)


def test_since_without_zone_is_local_time(monkeypatch):
    from datetime import datetime

    expected = datetime(2023, 11, 14, 22, 13, 20).astimezone().timestamp()
    assert parse.parse_since("2023-11-14T22:13:20", now=NOW) == expected
    assert (
        parse.parse_since("2023-11-14", now=NOW) == datetime(2023, 11, 14).astimezone().timestamp()
    )


def test_bad_since():
    with pytest.raises(ValueError, match='failed to parse value as time or duration: "soon"'):
        parse.parse_since("soon", now=NOW)


@pytest.mark.parametrize(
    ("text", "signal"),
    [
        ("KILL", "SIGKILL"),
        ("SIGKILL", "SIGKILL"),
        ("sigterm", "SIGTERM"),
        ("hup", "SIGHUP"),
        ("9", "9"),
        ("rtmin", "SIGRTMIN"),
    ],
)
def test_signals(text, signal):
    assert parse.parse_signal(text) == signal


@pytest.mark.parametrize("text", ["FOO", "0", "65", "", "SIG_DFL", "-9"])
def test_bad_signals(text):
    with pytest.raises(ValueError, match="invalid signal"):
        parse.parse_signal(text)
