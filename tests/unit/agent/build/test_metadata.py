"""Config-only instructions, and the builder's pure helpers."""

from __future__ import annotations

from typing import Any

import pytest

from agent.build.dockerfile import parse
from agent.build.metadata import apply, parse_duration
from agent.build.stage import parse_from, split_stages
from api.errors import InvalidArgument

pytestmark = pytest.mark.unit


def test_shell_form_uses_the_stage_shell() -> None:
    config: dict[str, Any] = {}
    apply(config, "CMD", "echo hi", shell=["/bin/bash", "-lc"])
    apply(config, "ENTRYPOINT", '["/init"]')
    assert config == {"Cmd": ["/bin/bash", "-lc", "echo hi"], "Entrypoint": ["/init"]}


def test_env_label_workdir_user_expose_volume() -> None:
    config: dict[str, Any] = {"Env": ["A=0"], "WorkingDir": "/app"}
    apply(config, "ENV", 'A=1 B="two words"')
    apply(config, "LABEL", "k=v")
    apply(config, "WORKDIR", "sub")
    apply(config, "USER", "nobody")
    apply(config, "EXPOSE", "80 53/udp")
    apply(config, "VOLUME", '["/data"]')
    apply(config, "STOPSIGNAL", "SIGINT")
    assert config["Env"] == ["A=1", "B=two words"]
    assert config["Labels"] == {"k": "v"}
    assert config["WorkingDir"] == "/app/sub"
    assert config["User"] == "nobody"
    assert config["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert config["Volumes"] == {"/data": {}}
    assert config["StopSignal"] == "SIGINT"


def test_shell_and_healthcheck() -> None:
    config: dict[str, Any] = {}
    apply(config, "SHELL", '["/bin/ash", "-c"]')
    apply(config, "HEALTHCHECK", "CMD wget -q localhost", flags={"interval": "1m30s"})
    assert config["Shell"] == ["/bin/ash", "-c"]
    assert config["Healthcheck"] == {
        "Test": ["CMD-SHELL", "wget -q localhost"],
        "Interval": 90 * 10**9,
    }
    apply(config, "HEALTHCHECK", "NONE")
    assert config["Healthcheck"] == {"Test": ["NONE"]}
    with pytest.raises(InvalidArgument, match="JSON form"):
        apply(config, "SHELL", "/bin/sh -c")
    with pytest.raises(InvalidArgument):
        parse_duration("10x", flag="interval")


def test_stages_and_from() -> None:
    meta, stages = split_stages(parse("ARG V=1\nFROM a AS b\nRUN x\nFROM b\n").instructions)
    assert [i.command for i in meta] == ["ARG"]
    assert [[i.command for i in s] for s in stages] == [["FROM", "RUN"], ["FROM"]]
    assert parse_from("busybox as Base") == ("busybox", "base")
    with pytest.raises(InvalidArgument, match="must begin with FROM"):
        split_stages(parse("RUN x\n").instructions)
    with pytest.raises(InvalidArgument, match="cannot be empty"):
        split_stages(parse("# only a comment\n").instructions)
