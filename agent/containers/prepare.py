"""Turning a container record into a runnable bundle: mounts, files and config.json.

Called by the engine at each start, after the root filesystem is mounted and the
network attached; it only reads the rootfs and writes inside the container's
directory, so a failure leaves nothing to undo but what the engine itself made.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api import engine_pb2
from api.errors import InvalidArgument

from . import rootfs, spec
from .config import Volumes
from .record import ContainerRecord


@dataclass(frozen=True)
class ResolvedMount:
    """A mount of the container's config resolved to a host path (or a tmpfs)."""

    target: str
    type: str  # bind | volume | tmpfs
    host_path: str = ""
    read_only: bool = False
    volume: str = ""
    tmpfs_size: int = 0
    tmpfs_mode: int = 0


def resolve_mounts(
    record: ContainerRecord, image_cfg: dict[str, Any], *, volumes: Volumes
) -> list[ResolvedMount]:
    """The user's mounts, then one anonymous volume per image VOLUME not covered."""
    cfg = record.spec()
    anon = iter(record.anonymous_volumes)
    out: list[ResolvedMount] = []
    for m in cfg.mounts:
        if m.type == "tmpfs":
            out.append(
                ResolvedMount(
                    target=m.target, type="tmpfs", tmpfs_size=m.tmpfs_size, tmpfs_mode=m.tmpfs_mode
                )
            )
        elif m.type == "bind":
            out.append(
                ResolvedMount(
                    target=m.target, type="bind", host_path=m.source, read_only=m.read_only
                )
            )
        else:
            out.append(_volume_mount(m.target, m.source or next(anon), m.read_only, volumes))
    covered = {m.target.rstrip("/") for m in cfg.mounts}
    for target in image_volumes(image_cfg):
        if target.rstrip("/") not in covered:
            out.append(_volume_mount(target, next(anon), False, volumes))
    return out


def _volume_mount(target: str, name: str, read_only: bool, volumes: Volumes) -> ResolvedMount:
    return ResolvedMount(
        target=target,
        type="volume",
        host_path=str(volumes.mountpoint(name)),
        read_only=read_only,
        volume=name,
    )


def image_volumes(image_cfg: dict[str, Any]) -> list[str]:
    return sorted(image_cfg.get("Volumes") or {})


def image_config(config: dict[str, Any]) -> dict[str, Any]:
    inner: dict[str, Any] = config.get("config") or {}
    return inner


def tmpfs_options(m: ResolvedMount) -> tuple[str, ...]:
    opts = [f"mode={m.tmpfs_mode:o}" if m.tmpfs_mode else "mode=1777"]
    if m.tmpfs_size:
        opts.append(f"size={m.tmpfs_size}")
    return tuple(opts)


def spec_mounts(mounts: Sequence[ResolvedMount], files: dict[str, Path]) -> list[spec.SpecMount]:
    out = [
        spec.SpecMount(destination=dest, type="bind", source=str(src), options=())
        for dest, src in files.items()
    ]
    for m in mounts:
        if m.type == "tmpfs":
            out.append(spec.SpecMount(destination=m.target, type="tmpfs", options=tmpfs_options(m)))
        else:
            ro = ("ro",) if m.read_only else ()
            out.append(
                spec.SpecMount(destination=m.target, type="bind", source=m.host_path, options=ro)
            )
    return out


EMBEDDED_DNS = "127.0.0.11"


@dataclass(frozen=True)
class DnsConfig:
    """--dns, --dns-search, --dns-option; `embedded`: the container is on a swarm
    overlay network, so its resolver is the daemon's embedded DNS (127.0.0.11)."""

    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    embedded: bool = False


def write_etc_files(
    directory: Path,
    *,
    hostname: str,
    ip_address: str,
    network_mode: str,
    dns: DnsConfig | None = None,
    extra_hosts: Sequence[str] = (),
) -> dict[str, Path]:
    """/etc/hosts, /etc/hostname and /etc/resolv.conf for the container, as docker writes."""
    hosts = [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
    ]
    if ip_address:
        hosts.append(f"{ip_address}\t{hostname}")
    for entry in extra_hosts:  # "NAME:IP" (--host / --add-host)
        name, _, address = entry.partition(":")
        hosts.append(f"{address}\t{name}")
    (directory / "hosts").write_text("\n".join(hosts) + "\n")
    (directory / "hostname").write_text(hostname + "\n")
    (directory / "resolv.conf").write_text(_resolv_conf(network_mode, dns or DnsConfig()))
    return {
        "/etc/hosts": directory / "hosts",
        "/etc/hostname": directory / "hostname",
        "/etc/resolv.conf": directory / "resolv.conf",
    }


def _resolv_conf(network_mode: str, dns: DnsConfig) -> str:
    if dns.nameservers or dns.embedded or dns.search or dns.options:
        servers = dns.nameservers or ([EMBEDDED_DNS] if dns.embedded else [])
        lines = [f"nameserver {server}" for server in servers]
        if dns.search:
            lines.append("search " + " ".join(dns.search))
        options = (["ndots:0"] if dns.embedded else []) + dns.options
        if options:
            lines.append("options " + " ".join(options))
        if servers:
            return "\n".join(lines) + "\n"
    try:
        host = Path("/etc/resolv.conf").read_text()
    except OSError:
        host = ""
    if network_mode == "host":
        return host
    # Loopback resolvers of the host are unreachable from the container's namespace.
    lines = [
        line
        for line in host.splitlines()
        if not (line.startswith("nameserver") and line.split()[1:2][0:1] == ["127.0.0.53"])
        and not (line.startswith("nameserver") and " 127." in line)
    ]
    return "\n".join(lines) + ("\n" if lines else "")


def copy_up(root: Path, mounts: Sequence[ResolvedMount]) -> None:
    """Fill an empty volume from the image's content at its target, as docker does."""
    for m in mounts:
        if m.type != "volume":
            continue
        dest = Path(m.host_path)
        if any(dest.iterdir()):
            continue
        src = rootfs.resolve_in_root(root, m.target)
        if src.is_dir():
            shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)


def process(
    record: ContainerRecord,
    *,
    root: Path,
    image_cfg: dict[str, Any],
    args: Sequence[str],
    env: Sequence[str] = (),
    workdir: str = "",
    user: str = "",
) -> spec.ProcessSpec:
    """The container's process (or an exec's, whose env/workdir/user are given):
    environment merged, user looked up and command resolved inside the rootfs."""
    cfg = record.spec()
    hostname = cfg.hostname or record.id[:12]
    merged = spec.merge_env(image_cfg.get("Env") or [], [*cfg.env, *env], hostname=hostname)
    cwd = workdir or cfg.workdir or image_cfg.get("WorkingDir") or "/"
    who = rootfs.resolve_user(root, user or cfg.user or image_cfg.get("User") or "0")
    path_env = next((e[5:] for e in merged if e.startswith("PATH=")), spec.DEFAULT_PATH)
    rootfs.find_executable(root, args[0], path_env=path_env, cwd=cwd)
    try:
        caps = spec.capabilities(add=list(cfg.cap_add), drop=list(cfg.cap_drop))
    except spec.CapabilityError as exc:
        raise InvalidArgument(str(exc)) from None
    return spec.ProcessSpec(
        args=list(args),
        env=merged,
        cwd=cwd,
        uid=who.uid,
        gid=who.gid,
        additional_gids=who.additional_gids,
        caps=caps,
    )


def build(
    record: ContainerRecord,
    *,
    root: Path,
    image_cfg: dict[str, Any],
    mounts: Sequence[ResolvedMount],
    files: dict[str, Path],
    cgroups_path: str,
    netns_path: str | None,
) -> dict[str, Any]:
    """The bundle's config.json for one start of the container."""
    cfg = record.spec()
    res = cfg.resources
    container = spec.ContainerSpec(
        process=process(record, root=root, image_cfg=image_cfg, args=record.args),
        hostname=cfg.hostname or record.id[:12],
        cgroups_path=cgroups_path,
        netns_path=netns_path,
        read_only=cfg.read_only,
        mounts=spec_mounts(mounts, files),
        limits=spec.Limits(
            memory_bytes=res.memory_bytes, nano_cpus=res.nano_cpus, pids_limit=res.pids_limit
        ),
        annotations={"io.pyswarm.container.name": record.name},
    )
    return spec.build_spec(container)


def exec_process(
    record: ContainerRecord,
    request: engine_pb2.ExecRequest,
    *,
    root: Path,
    image_cfg: dict[str, Any],
) -> dict[str, Any]:
    """The OCI process of an `exec` in a running container."""
    proc = process(
        record,
        root=root,
        image_cfg=image_cfg,
        args=request.cmd,
        env=request.env,
        workdir=request.workdir,
        user=request.user,
    )
    return spec.process_json(proc)


def write_config(bundle: Path, config: dict[str, Any]) -> None:
    (bundle / "config.json").write_text(json.dumps(config, indent=1))
