"""Flag parsing of `pyswarm registry serve`."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cli.commands.registry import parse_addr, parse_size, registry
from cli.main import CommandFailure

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "size"),
    [("2GiB", 2 << 30), ("512m", 512 << 20), ("1048576", 1 << 20), ("4k", 4096), ("1 GB", 1 << 30)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "addr"),
    [
        ("127.0.0.1:5000", ("127.0.0.1", 5000)),
        (":5000", ("0.0.0.0", 5000)),
        ("[::1]:5001", ("::1", 5001)),
    ],
)
def test_parse_addr(text: str, addr: tuple[str, int]) -> None:
    assert parse_addr(text) == addr


@pytest.mark.parametrize("text", ["5000", "host:", "host:70000", "host:x"])
def test_parse_addr_refuses(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_addr(text)


def test_parse_size_refuses() -> None:
    with pytest.raises(click.BadParameter):
        parse_size("lots")


def test_tls_flags_go_together(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate")
    result = CliRunner().invoke(registry, ["serve", "--tls-cert", str(cert)])
    assert result.exit_code == 2
    assert "go together" in result.output


def test_bad_certificate_is_one_line_failure(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate")
    args = ["serve", "--tls-cert", str(cert), "--tls-key", str(cert), "--root", str(tmp_path)]
    result = CliRunner().invoke(registry, args)
    assert isinstance(result.exception, CommandFailure)
    assert result.exception.message.startswith("pyswarm registry: ")
