"""Base image recipes from Debian packages: `busybox` from busybox-static.

`python -m deploy.baseimage busybox OUT.tar` writes a root filesystem tarball —
/bin/busybox with a symlink per applet, /etc/passwd and /etc/group with root and
nobody, /tmp, /root — ready for `pyswarm image import -c 'CMD ["sh"]' OUT.tar busybox`.
Entries are written in a fixed order with fixed times, so the same busybox binary
always gives the same layer digest.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
MTIME = 1_700_000_000
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnobody:x:65534:\n"


def _dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.mtime = MTIME
    tar.addfile(info)


def _file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = MTIME
    tar.addfile(info, io.BytesIO(data))


def _symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mtime = MTIME
    tar.addfile(info)


def applets(busybox: Path = BUSYBOX) -> list[str]:
    out = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
    return sorted({a for a in out.stdout.split() if a and a != "busybox"})


def write_busybox_rootfs(out: Path, *, busybox: Path = BUSYBOX) -> None:
    if not busybox.exists():
        raise SystemExit(f"{busybox} not found: install busybox-static (make install)")
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "dev", "etc", "proc", "root", "sys", "usr", "usr/bin", "var"):
            _dir(tar, d, 0o700 if d == "root" else 0o755)
        _dir(tar, "tmp", 0o1777)
        _file(tar, "bin/busybox", busybox.read_bytes(), 0o755)
        for name in applets(busybox):
            _symlink(tar, f"bin/{name}", "busybox")
        _file(tar, "etc/passwd", PASSWD.encode())
        _file(tar, "etc/group", GROUP.encode())


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] != "busybox":
        print("usage: python -m deploy.baseimage busybox OUT.tar", file=sys.stderr)
        return 2
    write_busybox_rootfs(Path(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
