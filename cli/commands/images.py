"""Image commands: images (image ls), image inspect, rmi (image rm), image prune, tag,
import, save and load, with docker's output.

Tarballs move in 1 MiB chunks both ways: `import` and `load` stream a file (or stdin)
to the daemon; `save` streams the archive into a temporary file next to `-o FILE` and
renames it into place, so a failed save leaves no half-written archive; without `-o`
it writes to stdout, but never to a terminal.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

import click

from cli import output
from cli.client import Chunks, CliError
from cli.commands import common

if TYPE_CHECKING:
    from api import engine_pb2 as pb

IMAGE_HEADERS = ("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")
IMAGE_COLUMNS = ("Repository", "Tag", "ID", "CreatedSince", "Size")
NONE = "<none>"
SIZE_PRECISION = 3  # docker images shows "4.26MB"


@click.command()
@click.option(
    "-a", "--all", "all_", is_flag=True, help="Show all images (default hides intermediate images)."
)
@common.quiet_option
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@common.format_option
@click.argument("repository", required=False)
def images(
    all_: bool, quiet: bool, no_trunc: bool, fmt: str | None, repository: str | None
) -> None:
    """List images, optionally only those of REPOSITORY[:TAG]."""
    list_images(repository, all_=all_, quiet=quiet, no_trunc=no_trunc, fmt=fmt)


@click.command("inspect")
@click.argument("images_", metavar="IMAGE...", nargs=-1, required=True)
@click.pass_context
def inspect_images(ctx: click.Context, images_: tuple[str, ...]) -> None:
    """Display detailed information on one or more images."""
    ctx.exit(inspect(images_))


@click.command()
@click.option("-f", "--force", is_flag=True, help="Force removal of the image.")
@click.argument("images_", metavar="IMAGE...", nargs=-1, required=True)
@click.pass_context
def rmi(ctx: click.Context, force: bool, images_: tuple[str, ...]) -> None:
    """Remove one or more images."""
    ctx.exit(remove_images(images_, force=force))


@click.command()
@click.option(
    "-a", "--all", "all_", is_flag=True, help="Remove all unused images, not just dangling ones."
)
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
def prune(all_: bool, force: bool) -> None:
    """Remove unused images."""
    warning = (
        "WARNING! This will remove all images without at least one container associated to them."
        if all_
        else "WARNING! This will remove all dangling images."
    )
    if force or common.confirm(warning):
        prune_images(all_=all_)


@click.command()
@click.argument("source", metavar="SOURCE_IMAGE[:TAG]")
@click.argument("target", metavar="TARGET_IMAGE[:TAG]")
def tag(source: str, target: str) -> None:
    """Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE."""
    tag_image(source, target)


@click.command("import")
@click.option("-c", "--change", multiple=True, help="Apply a Dockerfile instruction to the image.")
@click.option("-m", "--message", default="", help="Set commit message for the imported image.")
@click.argument("file", metavar="file|-")
@click.argument("reference", metavar="[REPOSITORY[:TAG]]", required=False, default="")
def import_(change: tuple[str, ...], message: str, file: str, reference: str) -> None:
    """Import the contents from a tarball (or - for stdin) to create a filesystem image."""
    if "://" in file:
        raise click.UsageError("importing from a URL is not supported; download it first")
    import_image(file, reference, changes=change, message=message)


@click.command()
@click.option("-o", "--output", "path", metavar="FILE", help="Write to a file, instead of STDOUT.")
@click.argument("images_", metavar="IMAGE...", nargs=-1, required=True)
def save(path: str | None, images_: tuple[str, ...]) -> None:
    """Save one or more images to a tar archive (streamed to STDOUT by default)."""
    if path is None and stdout_is_terminal():
        raise CliError("Cowardly refusing to save to a terminal. Use the -o flag or redirect")
    save_images(images_, path)


@click.command()
@click.option(
    "-i", "--input", "path", metavar="FILE", help="Read from tar archive file, instead of STDIN."
)
@click.option("-q", "--quiet", is_flag=True, help="Suppress the load output.")
def load(path: str | None, quiet: bool) -> None:
    """Load an image from a tar archive or STDIN."""
    if path is None and sys.stdin.isatty():
        raise CliError("requested load from stdin, but stdin is empty")
    load_images(path)


# ---- actions --------------------------------------------------------------------


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def list_images(
    repository: str | None, *, all_: bool, quiet: bool, no_trunc: bool, fmt: str | None
) -> None:
    with common.engine() as engine:
        summaries = sorted(engine.image_list(all=all_), key=lambda i: -i.created)
    now = time.time()
    rows = [
        row
        for image in summaries
        for row in image_rows(image, now=now, trunc=not no_trunc)
        if matches(row, repository)
    ]
    if quiet:
        for row in rows:
            click.echo(row["ID"])
        return
    cells = [[row[col] for col in IMAGE_COLUMNS] for row in rows]
    common.print_rows(fmt, IMAGE_HEADERS, rows, cells)


def split_reference(reference: str) -> tuple[str, str]:
    """`localhost:5000/app:1.0` -> (`localhost:5000/app`, `1.0`); no tag -> `<none>`."""
    repository, sep, tag_ = reference.rpartition(":")
    if not sep or "/" in tag_:
        return reference, NONE
    return repository, tag_


def image_rows(image: pb.ImageSummary, *, now: float, trunc: bool) -> list[dict[str, str]]:
    """The `images` rows of one image, one per tag (`<none>` when untagged)."""
    common_fields = {
        "ID": output.short_id(image.id) if trunc else image.id,
        "CreatedAt": output.created_at(image.created),
        "CreatedSince": output.ago(image.created, now=now),
        "Size": output.human_size(image.size, precision=SIZE_PRECISION),
        "Digest": NONE,
        "Containers": "N/A",
    }
    references = list(image.repo_tags) or [f"{NONE}:{NONE}"]
    return [
        {"Repository": repo, "Tag": tag_, **common_fields}
        for repo, tag_ in map(split_reference, references)
    ]


def matches(row: dict[str, str], wanted: str | None) -> bool:
    if not wanted:
        return True
    repository, tag_ = split_reference(wanted)
    return row["Repository"] == repository and tag_ in (NONE, row["Tag"])


def inspect(references: Sequence[str]) -> int:
    docs: list[Any] = []
    with common.engine() as engine:
        failed = common.each(
            references, lambda ref: docs.append(json.loads(engine.image_inspect(ref))), echo=False
        )
    click.echo(output.json_array(docs))
    return failed


def remove_images(references: Sequence[str], *, force: bool) -> int:
    with common.engine() as engine:
        return common.each(
            references,
            lambda ref: print_removal(engine.image_remove(ref, force=force)),
            echo=False,
        )


def print_removal(removed: pb.ImageRemoveResponse) -> None:
    for reference in removed.untagged:
        click.echo(f"Untagged: {reference}")
    for image_id in removed.deleted:
        click.echo(f"Deleted: {image_id}")


def prune_images(*, all_: bool) -> None:
    with common.engine() as engine:
        pruned = engine.image_prune(all=all_)
    lines = [prune_line(item) for item in pruned.deleted]
    common.print_prune("Images", lines, pruned.space_reclaimed)


def prune_line(item: str) -> str:
    """docker's prune lines: `deleted: sha256:...` for images, `untagged: ref` for tags."""
    return f"deleted: {item}" if item.startswith("sha256:") else f"untagged: {item}"


def tag_image(source: str, target: str) -> None:
    with common.engine() as engine:
        engine.image_tag(source, target)


@contextmanager
def opened(path: str | None) -> Iterator[IO[bytes]]:
    """A file to read, or stdin for None and `-`."""
    if path in (None, "-"):
        yield sys.stdin.buffer
        return
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed below, after the stream
    except OSError as e:
        raise CliError(f"open {path}: {(e.strerror or str(e)).lower()}") from None
    with file:
        yield file


def import_image(path: str, reference: str, *, changes: Iterable[str], message: str) -> None:
    with opened(path) as file, common.engine() as engine:
        image_id = engine.image_import(reference, Chunks(file), changes=changes, message=message)
    click.echo(image_id)


def load_images(path: str | None) -> None:
    with opened(path) as file, common.engine() as engine:
        loaded = engine.image_load(Chunks(file))
    for item in loaded:
        click.echo(loaded_line(item))


def loaded_line(item: str) -> str:
    """docker's `Loaded image: ref` / `Loaded image ID: id` (the daemon may send either
    the whole line or just the reference or ID)."""
    if item.startswith("Loaded "):
        return item
    if item.startswith("sha256:"):
        return f"Loaded image ID: {item}"
    return f"Loaded image: {item}"


def save_images(references: Sequence[str], path: str | None) -> None:
    with common.engine() as engine:
        chunks = engine.image_save(references)
        if path is None:
            copy(chunks, sys.stdout.buffer)
        else:
            save_to_file(chunks, path)


def copy(chunks: Iterable[bytes], out: IO[bytes]) -> None:
    for chunk in chunks:
        out.write(chunk)
    out.flush()


def save_to_file(chunks: Iterable[bytes], path: str) -> None:
    """Write beside `path`, then rename: a failed save never leaves a partial archive."""
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".{name}.pyswarm-{os.getpid()}")
    try:
        with open(temporary, "wb") as out:
            copy(chunks, out)
        os.replace(temporary, path)
    except OSError as e:
        raise CliError(f"failed to save image: {e.strerror or e}: {path}") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
