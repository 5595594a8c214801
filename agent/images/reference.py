"""Image references (`busybox`, `localhost:5000/app:1.0`, `name@sha256:...`), by docker's grammar.

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ registry "/" ] component ( "/" component )*
    component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
    digest     := "sha256:" 64 lowercase hex digits

The first component is a registry host when it contains `.` or `:` or is `localhost`
(so `foo/bar` is a repository on the default registry). References are kept in the
familiar form: the default registry is `""`, and `docker.io/library/busybox` is the same
reference as `busybox`. A reference with neither tag nor digest gets the tag `latest`.

    >>> ref = parse_reference("localhost:5000/app")
    >>> ref.name, ref.tag, str(ref)
    ('localhost:5000/app', 'latest', 'localhost:5000/app:latest')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from api.errors import InvalidArgument

DEFAULT_TAG = "latest"
DEFAULT_REGISTRY = "docker.io"
_DEFAULT_REGISTRIES = frozenset({DEFAULT_REGISTRY, "index.docker.io"})
_OFFICIAL_NAMESPACE = "library/"
_MAX_NAME_LENGTH = 255

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_REGISTRY = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """The familiar name: `busybox`, `localhost:5000/app`."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    @property
    def canonical_name(self) -> str:
        """The fully qualified name: `docker.io/library/busybox`."""
        if self.registry:
            return self.name
        if "/" in self.repository:
            return f"{DEFAULT_REGISTRY}/{self.repository}"
        return f"{DEFAULT_REGISTRY}/{_OFFICIAL_NAMESPACE}{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> Reference:
    """Parse a reference; InvalidArgument in docker's words when it is malformed."""
    rest, digest = _split_digest(text)
    name, tag = _split_tag(rest)
    registry, repository = _split_registry(text, name)
    _check_repository(text, repository)
    if len(name) > _MAX_NAME_LENGTH:
        raise _invalid(text)
    if registry in _DEFAULT_REGISTRIES:
        registry = ""
    if not registry and repository.startswith(_OFFICIAL_NAMESPACE):
        rest_of_path = repository[len(_OFFICIAL_NAMESPACE) :]
        if "/" not in rest_of_path:
            repository = rest_of_path
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry=registry, repository=repository, tag=tag, digest=digest)


def _split_digest(text: str) -> tuple[str, str | None]:
    if "@" not in text:
        return text, None
    rest, digest = text.split("@", 1)
    if not _DIGEST.fullmatch(digest):
        raise _invalid(text)
    return rest, digest


def _split_tag(text: str) -> tuple[str, str | None]:
    colon = text.rfind(":")
    if colon == -1 or "/" in text[colon:]:
        return text, None
    name, tag = text[:colon], text[colon + 1 :]
    if not _TAG.fullmatch(tag):
        raise _invalid(text)
    return name, tag


def _split_registry(text: str, name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        if not _REGISTRY.fullmatch(first):
            raise _invalid(text)
        return first, rest
    return "", name


def _check_repository(text: str, repository: str) -> None:
    components = repository.split("/")
    if all(_COMPONENT.fullmatch(c) for c in components):
        if _HEX64.fullmatch(repository):
            raise InvalidArgument(
                f'invalid repository name "{repository}": '
                "cannot specify 64-byte hexadecimal strings"
            )
        return
    if all(_COMPONENT.fullmatch(c.lower()) for c in components):
        raise InvalidArgument(
            f'invalid reference format: repository name must be lowercase: "{text}"'
        )
    raise _invalid(text)


def _invalid(text: str) -> InvalidArgument:
    return InvalidArgument(f'invalid reference format: "{text}"')
