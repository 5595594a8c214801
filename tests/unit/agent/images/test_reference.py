"""Image references by docker's grammar."""

from __future__ import annotations

import pytest

from agent.images.reference import Reference, parse_reference
from api.errors import InvalidArgument

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest", "familiar"),
    [
        ("busybox", "", "busybox", "latest", None, "busybox:latest"),
        ("busybox:1.36", "", "busybox", "1.36", None, "busybox:1.36"),
        ("library/busybox", "", "busybox", "latest", None, "busybox:latest"),
        ("docker.io/library/busybox:x", "", "busybox", "x", None, "busybox:x"),
        ("index.docker.io/me/app", "", "me/app", "latest", None, "me/app:latest"),
        ("me/app", "", "me/app", "latest", None, "me/app:latest"),
        ("localhost/app", "localhost", "app", "latest", None, "localhost/app:latest"),
        ("localhost:5000/a/b:v1", "localhost:5000", "a/b", "v1", None, "localhost:5000/a/b:v1"),
        ("registry.example.com/x", "registry.example.com", "x", "latest", None, None),
        ("Registry.Example.com/x", "Registry.Example.com", "x", "latest", None, None),
        ("a.b-c__d--e", "", "a.b-c__d--e", "latest", None, None),
        ("localhost:5000", "", "localhost", "5000", None, "localhost:5000"),
        (f"busybox@{DIGEST}", "", "busybox", None, DIGEST, f"busybox@{DIGEST}"),
        (f"busybox:1@{DIGEST}", "", "busybox", "1", DIGEST, f"busybox:1@{DIGEST}"),
        ("app:" + "t" * 128, "", "app", "t" * 128, None, None),
        ("app:_Under.score-OK", "", "app", "_Under.score-OK", None, None),
    ],
)
def test_valid_references(
    text: str,
    registry: str,
    repository: str,
    tag: str | None,
    digest: str | None,
    familiar: str | None,
) -> None:
    ref = parse_reference(text)
    assert ref == Reference(registry=registry, repository=repository, tag=tag, digest=digest)
    if familiar is not None:
        assert str(ref) == familiar


def test_name_and_canonical_name() -> None:
    assert parse_reference("busybox:1").name == "busybox"
    assert parse_reference("busybox").canonical_name == "docker.io/library/busybox"
    assert parse_reference("me/app").canonical_name == "docker.io/me/app"
    assert parse_reference("localhost:5000/app").name == "localhost:5000/app"
    assert parse_reference("localhost:5000/app").canonical_name == "localhost:5000/app"


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":tag",
        "app:",
        "app:-tag",
        "app:" + "t" * 129,
        "a//b",
        "/a",
        "a/",
        "a_-b",
        "-a",
        "a..b",
        "app@sha256:short",
        "app@md5:" + "a" * 32,
        f"app@{DIGEST.upper()}",
        "bad_host:5000:x/app",
        "with space",
        "x" * 256,
    ],
)
def test_invalid_references(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        parse_reference(text)


def test_uppercase_repository_says_why() -> None:
    with pytest.raises(InvalidArgument, match="repository name must be lowercase"):
        parse_reference("Busybox")


def test_a_64_hex_name_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="64-byte hexadecimal"):
        parse_reference("a" * 64)
