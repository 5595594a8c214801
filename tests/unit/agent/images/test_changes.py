"""docker's --change instructions for import."""

from __future__ import annotations

import pytest

from agent.images.changes import apply_changes
from api.errors import InvalidArgument

pytestmark = pytest.mark.unit


def test_exec_and_shell_forms() -> None:
    config = apply_changes({}, ['CMD ["sh", "-c", "echo hi"]', "ENTRYPOINT /bin/init --verbose"])
    assert config["Cmd"] == ["sh", "-c", "echo hi"]
    assert config["Entrypoint"] == ["/bin/sh", "-c", "/bin/init --verbose"]


def test_entrypoint_drops_an_inherited_cmd_but_not_one_set_alongside() -> None:
    assert "Cmd" not in apply_changes({"Cmd": ["old"]}, ['ENTRYPOINT ["e"]'])
    config = apply_changes({"Cmd": ["old"]}, ['CMD ["new"]', 'ENTRYPOINT ["e"]'])
    assert config["Cmd"] == ["new"]


def test_env_forms_and_replacement() -> None:
    config = apply_changes(
        {"Env": ["PATH=/bin", "KEEP=1"]},
        ['ENV PATH=/usr/bin:/bin A="two words" B=3', "ENV LEGACY value with spaces"],
    )
    assert config["Env"] == [
        "KEEP=1",
        "PATH=/usr/bin:/bin",
        "A=two words",
        "B=3",
        "LEGACY=value with spaces",
    ]


def test_labels_workdir_user_stopsignal() -> None:
    config = apply_changes(
        {},
        [
            'LABEL org.example.a=1 "b"="x y"',
            "WORKDIR /srv",
            "WORKDIR app",
            "USER 1000:1000",
            "STOPSIGNAL SIGINT",
        ],
    )
    assert config["Labels"] == {"org.example.a": "1", "b": "x y"}
    assert config["WorkingDir"] == "/srv/app"
    assert config["User"] == "1000:1000"
    assert config["StopSignal"] == "SIGINT"


def test_expose_and_volume() -> None:
    config = apply_changes(
        {}, ["EXPOSE 80 53/udp 8000-8001/tcp", 'VOLUME ["/data"]', "VOLUME /a /b"]
    )
    assert config["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}}
    assert config["Volumes"] == {"/data": {}, "/a": {}, "/b": {}}


def test_instructions_are_case_insensitive_and_input_is_not_modified() -> None:
    base = {"Env": ["A=1"]}
    config = apply_changes(base, ["env B=2", "cmd echo"])
    assert config["Env"] == ["A=1", "B=2"]
    assert base == {"Env": ["A=1"]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("FROM busybox", "FROM is not a valid change command"),
        ("RUN true", "RUN is not a valid change command"),
        ("", "an empty line is not a valid change command"),
        ("CMD", "CMD requires at least one argument"),
        ("EXPOSE 70000", "invalid port in EXPOSE: 70000"),
        ("EXPOSE 80/icmp", "invalid port in EXPOSE"),
        ("ENV A", "ENV names must be followed by a value"),
        ("ENV A=1 B", "ENV expects KEY=VALUE pairs"),
        ('LABEL a="unterminated', "No closing quotation"),
        ("STOPSIGNAL TERM KILL", "STOPSIGNAL takes one signal"),
    ],
)
def test_invalid_changes(change: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        apply_changes({}, [change])
