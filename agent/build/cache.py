"""The build cache: which image a build step made, by the step's cache key.

`<data-root>/build/cache.json` maps cache keys to image IDs. The key (`cache_key`) is a
sha256 over the canonical JSON of the parent image ID, the instruction text after
substitution, and what else decides the step's result: the sources digest of a
COPY/ADD, the build args in effect for a RUN. An entry is used only while its image
exists (`ImageStore` may prune it), so an entry never resurrects a deleted image.

Writes re-read the file under a process-wide lock and replace it atomically, so
concurrent builds in one daemon never lose each other's entries.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from ..images.blobs import write_atomic

_LOCK = threading.Lock()
MAX_ENTRIES = 10_000


def cache_key(
    *,
    parent: str,
    instruction: str,
    sources: str = "",
    build_args: Mapping[str, str] | None = None,
) -> str:
    document = [parent, instruction, sources, sorted((build_args or {}).items())]
    canonical = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


class BuildCache:
    def __init__(self, path: Path, *, exists: Callable[[str], bool]) -> None:
        self.path = path
        self._exists = exists

    def get(self, key: str) -> str | None:
        image_id = self._load().get(key)
        if image_id is None or not self._exists(image_id):
            return None
        return image_id

    def put(self, key: str, image_id: str) -> None:
        with _LOCK:
            entries = self._load()
            entries.pop(key, None)
            entries[key] = image_id  # newest last, so trimming drops the oldest
            while len(entries) > MAX_ENTRIES:
                entries.pop(next(iter(entries)))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps({"version": 1, "entries": entries}).encode())

    def _load(self) -> dict[str, str]:
        try:
            document = json.loads(self.path.read_bytes())
        except (FileNotFoundError, ValueError):
            return {}
        entries = document.get("entries") if isinstance(document, dict) else None
        if not isinstance(entries, dict):
            return {}
        return {str(k): str(v) for k, v in entries.items()}
