"""`pyswarm registry serve`: run the OCI distribution server in the foreground.

The command parses and validates its flags, then calls `manager.registry.app.serve`;
it stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import click

from cli.main import CommandFailure

DEFAULT_ROOT = "/var/lib/pyswarm/registry"
_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(i?b?)", re.IGNORECASE)
_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str) -> int:
    """Bytes from `2GiB`, `512m`, `1048576`: binary multiples, as docker's flags read them."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise click.BadParameter(f"invalid size: {text!r}")
    return int(match[1]) << (10 * _UNITS[match[2].lower()])


def parse_addr(text: str) -> tuple[str, int]:
    """(host, port) from `HOST:PORT`, `:PORT` (all interfaces) or `[V6]:PORT`."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


@click.group()
def registry() -> None:
    """Run an image registry."""


@registry.command()
@click.option("--addr", default="127.0.0.1:5000", show_default=True, help="HOST:PORT to listen on.")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_ROOT,
    show_default=True,
    help="Directory holding blobs, repositories and uploads.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Serve HTTPS with this PEM certificate (chain).",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The PEM private key of --tls-cert.",
)
@click.option(
    "--htpasswd",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Require Basic auth against this htpasswd file (bcrypt entries, htpasswd -B).",
)
@click.option("--max-body", default="2GiB", show_default=True, help="Largest blob accepted.")
def serve(
    addr: str,
    root: Path,
    tls_cert: Path | None,
    tls_key: Path | None,
    htpasswd: Path | None,
    max_body: str,
) -> None:
    """Serve the OCI distribution API in the foreground.

    Plain HTTP unless --tls-cert and --tls-key are given; stops on SIGINT or SIGTERM.
    """
    from manager.registry import app

    host, port = parse_addr(addr)
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    try:
        context = app.tls_context(tls_cert, tls_key) if tls_cert and tls_key else None
        config = app.Config(root=root, max_body=parse_size(max_body), htpasswd=htpasswd)
        app.serve(config, host=host, port=port, ssl_context=context)
    except (OSError, ssl.SSLError, UnicodeDecodeError) as e:  # bad files, port in use
        raise CommandFailure(f"pyswarm registry: {e}") from None
