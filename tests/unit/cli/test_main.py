"""The `pyswarm` command line without a daemon: help, laziness, usage errors and exit
codes, flags reaching the request, and a daemon that is not there."""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli.main
from cli.client import ContainerSpec
from cli.commands import images, run
from cli.main import LazyGroup
from cli.main import cli as pyswarm
from cli.parse import MountSpec, PortSpec

pytestmark = pytest.mark.unit

CLI_DIR = Path(cli.main.__file__).parent


def invoke(*args: str, env: dict[str, str] | None = None, stdin: str | None = None):
    return CliRunner().invoke(pyswarm, list(args), env=env, input=stdin, prog_name="pyswarm")


def module_level_imports(path: Path) -> set[str]:
    """Modules a file imports at run time outside functions (TYPE_CHECKING blocks excluded)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_main_imports_only_click_and_the_standard_library():
    imports = module_level_imports(CLI_DIR / "main.py")
    assert imports - {"__future__", "importlib", "collections.abc", "contextlib", "typing"} == {
        "click"
    }


DAEMON_WIRING = (
    "daemon.py",
    "swarmnode.py",
    "localcontrol.py",
    "hostfacts.py",
    "swarmtasks.py",
)


def test_grpc_and_api_are_imported_inside_functions_only():
    for path in [*CLI_DIR.glob("*.py"), *CLI_DIR.glob("commands/*.py")]:
        if path.name in DAEMON_WIRING:  # runs in the daemon, never in the client
            continue
        heavy = {m for m in module_level_imports(path) if m.split(".")[0] in ("grpc", "api")}
        assert not heavy, f"{path.name} imports {heavy} at module level"


def test_help_lists_every_command_without_importing_any(monkeypatch):
    def refuse(name: str) -> None:
        raise AssertionError(f"--help imported {name}")

    monkeypatch.setattr("importlib.import_module", refuse)
    res = invoke("--help")
    assert res.exit_code == 0
    for name in ("run", "ps", "images", "volume", "container", "daemon", "version", "info"):
        assert f"\n  {name} " in res.stdout
    assert "Management Commands:" in res.stdout
    assert "\n  list " not in invoke("container", "--help").stdout  # aliases stay hidden


def test_every_command_resolves_and_has_help():
    groups = [cli.main.cli, cli.main.container, cli.main.image, cli.main.volume]
    for group in groups:
        assert isinstance(group, LazyGroup)
        for name, entry in group.lazy.items():
            if entry.target.startswith("cli.daemon:"):
                continue  # written elsewhere
            command = group.get_command(None, name)  # type: ignore[arg-type]
            assert command is not None and command.help, name
            for param in command.params:
                if param.param_type_name == "option":
                    assert param.help, f"{name} {param.opts}"


def test_no_arguments_prints_help_and_succeeds():
    assert invoke().exit_code == 0
    res = invoke("container")
    assert res.exit_code == 0 and "Manage containers" in res.stdout


def one_line(text: str) -> str:
    assert text.count("\n") == 1, text
    return text.strip()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["run", "-m", "12q", "busybox"],
            125,
            'pyswarm: invalid argument "12q" for "-m, --memory" flag: invalid size: \'12q\'',
        ),
        (
            ["create", "--restart", "sometimes", "busybox"],
            125,
            'pyswarm: invalid argument "sometimes" for "--restart" flag: '
            "invalid restart policy 'sometimes'",
        ),
        (["run"], 125, "pyswarm: Missing argument 'IMAGE'."),
        (["run", "--bogus", "busybox"], 125, "pyswarm: No such option"),
        (
            ["run", "--rm", "--restart", "always", "busybox"],
            125,
            "pyswarm: Conflicting options: --restart and --rm",
        ),
        (["ps", "--bogus"], 1, "pyswarm: No such option"),
        (["ps", "--format", "yaml"], 1, "unsupported format: 'yaml'"),
        (["stop"], 1, "pyswarm: Missing argument 'CONTAINERS...'."),
        (["logs", "--since", "soon", "x"], 1, 'invalid value for "since"'),
        (["logs", "--tail", "some", "x"], 1, 'invalid argument "some" for "-n, --tail" flag'),
        (["kill", "-s", "FOO", "x"], 1, "invalid signal: FOO"),
        (["nosuch"], 1, "pyswarm: No such command 'nosuch'."),
    ],
)
def test_usage_errors_are_one_line_with_dockers_exit_codes(args, code, message):
    res = invoke(*args)
    assert res.exit_code == code
    assert message in one_line(res.stderr)
    assert res.stdout == ""


def missing_socket(tmp_path: Path) -> dict[str, str]:
    return {"PYSWARM_HOST": f"unix://{tmp_path}/none.sock"}


def cannot_connect(host: str) -> str:
    return f"Cannot connect to the pyswarm daemon at {host}. Is the daemon running?"


@pytest.mark.parametrize(
    ("args", "code"),
    [(["ps"], 1), (["run", "busybox"], 125), (["create", "busybox"], 125), (["rm", "x"], 1)],
)
def test_missing_daemon(tmp_path, args, code):
    env = missing_socket(tmp_path)
    res = invoke(*args, env=env)
    assert res.exit_code == code
    assert one_line(res.stderr) == cannot_connect(env["PYSWARM_HOST"])


def test_host_flag_wins_over_the_environment(tmp_path):
    host = f"unix://{tmp_path}/flag.sock"
    res = invoke("-H", host, "ps", env=missing_socket(tmp_path))
    assert one_line(res.stderr) == cannot_connect(host)


def test_refused_socket(tmp_path):
    path = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))  # bound, never listening: connections are refused
        res = invoke("-H", f"unix://{path}", "images")
    assert res.exit_code == 1
    assert one_line(res.stderr) == cannot_connect(f"unix://{path}")


def test_version_prints_the_client_then_the_error(tmp_path):
    res = invoke("version", env=missing_socket(tmp_path))
    assert res.exit_code == 1
    assert res.stdout.startswith("Client:\n Version:")
    assert "Cannot connect" in res.stderr


def test_save_refuses_a_terminal(monkeypatch, tmp_path):
    monkeypatch.setattr(images, "stdout_is_terminal", lambda: True)
    res = invoke("save", "busybox", env=missing_socket(tmp_path))
    assert res.exit_code == 1
    assert one_line(res.stderr) == (
        "Cowardly refusing to save to a terminal. Use the -o flag or redirect"
    )


@pytest.fixture
def captured(monkeypatch) -> list[tuple[ContainerSpec, bool]]:
    calls: list[tuple[ContainerSpec, bool]] = []

    def fake_run(spec: ContainerSpec, *, detach: bool) -> int:
        calls.append((spec, detach))
        return 3

    monkeypatch.setattr(run, "run_container", fake_run)
    return calls


def test_run_options_stop_at_the_image(captured):
    res = invoke("run", "--rm", "-h", "box", "busybox", "ls", "-l", "--rm")
    assert res.exit_code == 3  # the container's code
    spec, detach = captured[0]
    assert spec.image == "busybox" and spec.cmd == ("ls", "-l", "--rm")
    assert spec.hostname == "box" and spec.auto_remove and not detach


def test_run_flags_reach_the_spec(captured, tmp_path, monkeypatch):
    monkeypatch.setenv("FROM_CLIENT", "yes")
    env_file = tmp_path / "env"
    env_file.write_text("A=file\nB=file\n")
    invoke(
        "run", "-d", "--name", "web", "--env-file", str(env_file), "-e", "B=flag",
        "-e", "FROM_CLIENT", "-e", "NOT_SET", "-v", "/srv:/data:ro", "--mount",
        "type=volume,target=/v", "--tmpfs", "/run:size=1m", "-m", "1g", "--cpus", "0.5",
        "--pids-limit", "-1", "--cap-add", "NET_ADMIN", "--restart", "on-failure:2",
        "--stop-signal", "int", "--stop-timeout", "3", "--network", "host",
        "-p", "8080:80", "-l", "a=b", "--entrypoint", "", "-u", "nobody", "-w", "/tmp",
        "--read-only", "busybox",
    )  # fmt: skip
    spec, detach = captured[0]
    assert detach and spec.name == "web"
    assert spec.env == ("A=file", "B=file", "B=flag", "FROM_CLIENT=yes")
    assert spec.mounts == (
        MountSpec("bind", "/srv", "/data", read_only=True),
        MountSpec("volume", "", "/v"),
        MountSpec("tmpfs", "", "/run", tmpfs_size=1 << 20),
    )
    assert (spec.memory_bytes, spec.nano_cpus, spec.pids_limit) == (1 << 30, 500_000_000, 0)
    assert spec.cap_add == ("NET_ADMIN",)
    assert (spec.restart.name, spec.restart.max_retries) == ("on-failure", 2)
    assert (spec.stop_signal, spec.stop_timeout, spec.network) == ("SIGINT", 3, "host")
    assert spec.ports == (PortSpec("", 8080, 80, "tcp"),)
    assert spec.labels == (("a", "b"),)
    assert spec.entrypoint == "" and spec.user == "nobody" and spec.workdir == "/tmp"
    assert spec.read_only and not spec.auto_remove


def test_run_defaults(captured):
    invoke("container", "run", "busybox")
    spec, detach = captured[0]
    assert spec == ContainerSpec(image="busybox") and not detach


def test_missing_env_file_is_a_usage_error(tmp_path):
    res = invoke("run", "--env-file", str(tmp_path / "nope"), "busybox")
    assert res.exit_code == 125
    assert "no such file or directory" in one_line(res.stderr)
