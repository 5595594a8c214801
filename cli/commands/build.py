"""`pyswarm build`: send a build context to the daemon and show the build as it goes.

The context directory is tarred into a temporary file first (honouring .dockerignore,
so less is sent; the daemon applies it again), then streamed in 1 MiB chunks after the
options. The daemon's output is printed as it comes, docker's classic builder's lines;
`-q` prints only the image ID. A final error is printed on stderr and exits 1.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli import output
from cli.client import Chunks, CliError
from cli.commands import common

if TYPE_CHECKING:
    from api import engine_pb2 as pb


def _pairs(values: tuple[str, ...], *, what: str, from_env: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sign, val = value.partition("=")
        if not key:
            raise click.BadParameter(f"invalid {what}: {value!r}")
        if sign:
            out[key] = val
        elif from_env and key in os.environ:
            out[key] = os.environ[key]  # docker: `--build-arg NAME` takes $NAME
        elif not from_env:
            out[key] = ""
    return out


@click.command()
@click.option("-t", "--tag", "tags", multiple=True, help="Name and optionally a tag (name:tag).")
@click.option("-f", "--file", "dockerfile", default="", help="Name of the Dockerfile.")
@click.option("--build-arg", "build_args", multiple=True, help="Set build-time variables.")
@click.option("--target", default="", help="Set the target build stage to build.")
@click.option("--no-cache", is_flag=True, help="Do not use cache when building the image.")
@click.option("--pull", is_flag=True, help="Always attempt to pull a newer base image.")
@click.option("--label", "labels", multiple=True, help="Set metadata for an image.")
@click.option("-q", "--quiet", is_flag=True, help="Suppress the build output, print the ID.")
@click.argument("context", metavar="PATH")
def build(
    tags: tuple[str, ...],
    dockerfile: str,
    build_args: tuple[str, ...],
    target: str,
    no_cache: bool,
    pull: bool,
    labels: tuple[str, ...],
    quiet: bool,
    context: str,
) -> None:
    """Build an image from a Dockerfile."""
    if "://" in context or context == "-":
        raise click.UsageError("only a local directory can be a build context")
    root = Path(context)
    if not root.is_dir():
        raise CliError(f'unable to prepare context: path "{context}" not found')
    name, extra = dockerfile_in_context(root, dockerfile)
    build_image(
        root,
        tags=tags,
        dockerfile=name,
        extra=extra,
        build_args=_pairs(build_args, what="build-arg", from_env=True),
        target=target,
        no_cache=no_cache,
        pull=pull,
        labels=_pairs(labels, what="label", from_env=False),
        quiet=quiet,
    )


def dockerfile_in_context(root: Path, dockerfile: str) -> tuple[str, dict[str, bytes]]:
    """`-f` is relative to the current directory, as docker's; the daemon wants it
    relative to the context. One from outside the context is sent along under a
    random name, as docker does; → (name in the context, extra files to send)."""
    from agent.build.ignore import OUTSIDE_DOCKERFILE_PREFIX

    if not dockerfile:
        return "Dockerfile", {}
    path = Path(dockerfile).absolute()
    try:
        return path.relative_to(root.absolute()).as_posix(), {}
    except ValueError:
        pass
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CliError(f"unable to prepare context: {dockerfile}: {e.strerror}") from None
    name = OUTSIDE_DOCKERFILE_PREFIX + secrets.token_hex(8)
    return name, {name: data}


def build_image(
    root: Path,
    *,
    tags: tuple[str, ...],
    dockerfile: str,
    extra: dict[str, bytes],
    build_args: dict[str, str],
    target: str,
    no_cache: bool,
    pull: bool,
    labels: dict[str, str],
    quiet: bool,
) -> None:
    from agent.build import ignore

    matcher = ignore.Matcher.from_context(root)
    with tempfile.TemporaryFile() as spool:
        keep = (dockerfile, ".dockerignore")
        try:
            ignore.write_tar(root, spool, matcher=matcher, keep=keep, extra=extra)
        except OSError as e:
            raise CliError(
                f"unable to prepare context: {e.filename or root}: {e.strerror}"
            ) from None
        size = spool.tell()
        spool.seek(0)
        if not quiet:
            click.echo(
                f"Sending build context to pyswarm daemon  {output.human_size(size, precision=4)}"
            )
        with common.engine() as engine:
            progress = engine.image_build(
                Chunks(spool), tags=tags, dockerfile=dockerfile, build_args=build_args,
                target=target, no_cache=no_cache, pull=pull, labels=labels, quiet=quiet,
            )  # fmt: skip
            image_id = _show(progress, quiet=quiet)
    if quiet:
        click.echo(image_id)


def _show(progress: Iterable[pb.Progress], *, quiet: bool) -> str:
    image_id = ""
    out = sys.stdout.buffer
    for message in progress:
        if message.stream and not quiet:
            out.write(message.stream)
            out.flush()
        if message.error:
            raise CliError(message.error)
        if message.digest:
            image_id = message.digest
    if not image_id:
        raise CliError("the build ended without an image")
    return image_id
