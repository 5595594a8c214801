"""The client's registry credentials: `~/.pyswarm/config.json`, as docker's config.json.

    {"auths": {"127.0.0.1:5000": {"auth": "<base64 of user:password>"}}}

The directory is `$PYSWARM_CONFIG` when set (like `$DOCKER_CONFIG`). The file is
created with mode 0600 from birth (never briefly wider) and replaced atomically
(temporary file in the same directory, fsync, rename), so a crash never leaves a
half-written file. Keys are registries as `registry_key` normalises them: host[:port],
with the Docker Hub's aliases all `docker.io`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from cli.main import CommandFailure

ENV = "PYSWARM_CONFIG"
FILE_NAME = "config.json"
DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


def config_path() -> Path:
    directory = os.environ.get(ENV) or str(Path.home() / ".pyswarm")
    return Path(directory) / FILE_NAME


def registry_key(server: str) -> str:
    """`https://index.docker.io/v1/` → `docker.io`; `http://h:5000/x` → `h:5000`."""
    host = server.strip()
    for scheme in ("https://", "http://"):
        host = host.removeprefix(scheme)
    host = host.split("/", 1)[0].lower()
    return DOCKER_HUB if not host or host in _HUB_ALIASES else host


def registry_of(image: str) -> str:
    """The registry an image reference names (docker's rule: a first component with
    `.` or `:`, or `localhost`), else the Docker Hub."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return registry_key(first)
    return DOCKER_HUB


def load(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise CommandFailure(f"cannot read {path}: {error}") from None
    if not isinstance(document, dict):
        raise CommandFailure(f"cannot read {path}: not a JSON object")
    return document


def save(document: dict[str, Any], path: Path | None = None) -> None:
    """Write the config atomically with mode 0600."""
    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".config-")  # mkstemp: 0600
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(document, file, indent="\t")
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def get(server: str, *, path: Path | None = None) -> tuple[str, str] | None:
    """(username, password) stored for `server`, or None."""
    entry = load(path).get("auths", {}).get(registry_key(server))
    if not isinstance(entry, dict) or not isinstance(entry.get("auth"), str):
        return None
    try:
        decoded = base64.b64decode(entry["auth"], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else None


def store(server: str, username: str, password: str, *, path: Path | None = None) -> None:
    document = load(path)
    auths = document.setdefault("auths", {})
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    auths[registry_key(server)] = {"auth": token}
    save(document, path)


def erase(server: str, *, path: Path | None = None) -> bool:
    """Forget `server`'s credentials; → whether there were some."""
    document = load(path)
    auths = document.get("auths", {})
    if registry_key(server) not in auths:
        return False
    del auths[registry_key(server)]
    save(document, path)
    return True
