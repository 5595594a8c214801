"""Registry benchmark (`make bench`): push and pull of a generated ~200 MB image with 4
layers of random (incompressible) data, through `pyswarm push`/`pull` against
`pyswarm registry serve`, side by side with `skopeo copy` against Debian's
`docker-registry` in the same run (target: pyswarm ≤ 1.2× skopeo's time).

The image is written here as an OCI layout tar (4 gzip layers, each one 50 MiB file
from os.urandom, streamed in chunks so memory stays low) and `pyswarm load`ed. skopeo's
source is `pyswarm save -o img.tar` of that image, two ways: `docker-archive:img.tar`
(skopeo then decompresses every layer and gzips it again: its digests differ from
ours) and the OCI layout in that same tar, extracted (`oci:`; skopeo sends our gzip
blobs as they are, checked by their digests) — the like-for-like baseline.

Both registries run inside the daemon's network namespace on its loopback, each run on
a fresh root (so every push uploads every layer, no "already exists" or mount); skopeo
runs there too (`nsenter --net=`). Each timed figure is a whole client process:
`pyswarm push` (CLI → daemon → registry); `pyswarm pull` after `rmi` (the daemon has no
blob of the image left; the pull verifies and also unpacks the layers); `skopeo copy
… docker://…` and `skopeo copy docker://… oci:DIR:1` (skopeo only writes blobs, so a
row adds `tar -xzf` of the 4 layers, in parallel, to its pull). Crossed pulls (skopeo
from our server, pyswarm from docker-registry) tell the client's share from the
server's. Both clients' start-up is measured (`pyswarm version`, `skopeo --version`)
and subtracted for the "net" ratio. 3 runs each (the data is big): medians printed,
not asserted: speed is measured here, not tested. All big files are deleted at the end.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar, cast

import pytest

from tests.daemons import PYSWARM, Daemon, wait_for

SKOPEO = shutil.which("skopeo")
REGISTRY = shutil.which("docker-registry")
CURL = shutil.which("curl")

pytestmark = [
    pytest.mark.bench,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed"),
    pytest.mark.skipif(REGISTRY is None, reason="docker-registry is not installed"),
    pytest.mark.skipif(CURL is None, reason="curl is not installed"),
]

RUNS = 3
LAYERS = 4
LAYER_BYTES = 50 << 20
IMAGE = "bench/img:1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


# ---- the image --------------------------------------------------------------------


class _Random:
    """A file-like source of `size` random bytes, read in chunks."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)


class _Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _Hashing:
    """A write-only file object that hashes and counts what passes into `out`."""

    def __init__(self, out: _Writable) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        pass  # `out` is flushed by whoever owns it


def _write_layer(path: Path, index: int) -> tuple[dict[str, Any], str]:
    """A gzip layer holding one random file at `path`; → (descriptor, diff_id)."""
    with open(path, "wb") as raw:
        compressed = _Hashing(raw)
        with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=1, mtime=0) as gz:
            plain = _Hashing(gz)
            stream = cast(IO[bytes], plain)
            with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                info = tarfile.TarInfo(f"data/layer{index}.bin")
                info.size, info.mode = LAYER_BYTES, 0o644
                tar.addfile(info, cast(IO[bytes], _Random(LAYER_BYTES)))
    digest = f"sha256:{compressed.sha.hexdigest()}"
    descriptor = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": digest,
        "size": compressed.size,
    }
    path.rename(path.with_name(digest.removeprefix("sha256:")))
    return descriptor, f"sha256:{plain.sha.hexdigest()}"


def _blob(blobs: Path, data: bytes) -> dict[str, Any]:
    hexpart = hashlib.sha256(data).hexdigest()
    (blobs / hexpart).write_bytes(data)
    return {"digest": f"sha256:{hexpart}", "size": len(data)}


def make_image_archive(work: Path) -> tuple[Path, list[dict[str, Any]]]:
    """An OCI layout tar of a 4-layer image named IMAGE; → (its path, the layers)."""
    blobs = work / "layout" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layers, diff_ids = [], []
    for index in range(LAYERS):
        descriptor, diff_id = _write_layer(blobs / f"layer{index}.tmp", index)
        layers.append(descriptor)
        diff_ids.append(diff_id)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/data/layer0.bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_blob(blobs, json.dumps(config).encode()),
        },
        "layers": layers,
    }
    index_json = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                **_blob(blobs, json.dumps(manifest).encode()),
                "annotations": {
                    "io.containerd.image.name": IMAGE,
                    "org.opencontainers.image.ref.name": IMAGE.rsplit(":", 1)[1],
                },
            }
        ],
    }
    layout = work / "layout"
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps(index_json))
    archive = work / "image.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(layout, arcname=".")
    shutil.rmtree(layout)
    return archive, layers


# ---- registries in the daemon's namespace ---------------------------------------------


def _status(daemon: Daemon, url: str) -> str:
    assert CURL is not None
    res = daemon.in_netns(
        "timeout", "5", CURL, "--noproxy", "*", "-s", "-o", "/dev/null",
        "-w", "%{http_code}", "--max-time", "2", url,
    )  # fmt: skip
    return res.stdout.strip() or "000"


def _peak_rss_kb(pid: int) -> int:
    """VmHWM of a process still running (nsenter execs the server: its PID is ours)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _unpack(blobs: Path, layer_digests: list[str], into: Path) -> None:
    """What a pull also does after the download: `tar -xzf` each layer, in parallel."""
    jobs = []
    for index, digest in enumerate(layer_digests):
        target = into / str(index)
        target.mkdir(parents=True)
        blob = blobs / digest.removeprefix("sha256:")
        jobs.append(subprocess.Popen(["tar", "-xzf", str(blob), "-C", str(target)]))
    assert [job.wait(timeout=300) for job in jobs] == [0] * len(jobs)


class Registries:
    """Registries started in the daemon's namespace, each stopped by its PID."""

    def __init__(self, daemon: Daemon, work: Path) -> None:
        self.daemon = daemon
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.kinds: dict[str, str] = {}
        self.peak_rss_kb: dict[str, int] = {}  # by kind, the highest seen at a stop

    def _start(self, kind: str, address: str, command: list[str], log: Path) -> str:
        with open(log, "wb") as out:
            process = subprocess.Popen(
                ["nsenter", f"--net={self.daemon.netns_path}", *command],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.running[address] = process
        self.kinds[address] = kind

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{command[0]} exited: {log.read_text()[-2000:]}")
            return _status(self.daemon, f"http://{address}/v2/") == "200"

        wait_for(ready, timeout=20, what=f"the registry at {address}", interval=0.1)
        return address

    def pyswarm(self, port: int) -> str:
        root = self.work / f"pyswarm-registry-{port}"
        address = f"127.0.0.1:{port}"
        command = [PYSWARM, "registry", "serve", "--addr", address, "--root", str(root)]
        log = self.work / f"pyswarm-registry-{port}.log"
        return self._start("pyswarm registry serve", address, command, log)

    def reference(self, port: int) -> str:
        assert REGISTRY is not None
        root = self.work / f"docker-registry-{port}"
        root.mkdir()
        address = f"127.0.0.1:{port}"
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}}}\n"
            f"http: {{addr: {address}}}\n"
            "log: {level: error}\n"
        )
        command = [REGISTRY, "serve", str(config)]
        return self._start("docker-registry", address, command, root.with_suffix(".log"))

    def stop(self, address: str) -> int:
        process = self.running.pop(address)
        kind = self.kinds[address]
        peak = _peak_rss_kb(process.pid)
        self.peak_rss_kb[kind] = max(peak, self.peak_rss_kb.get(kind, 0))
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise

    def stop_all(self) -> None:
        for address in list(self.running):
            self.stop(address)


@pytest.fixture
def registries(daemon: Daemon, tmp_path: Path) -> Iterator[Registries]:
    made = Registries(daemon, tmp_path / "bench")
    try:
        yield made
    finally:
        made.stop_all()


# ---- the benchmark ------------------------------------------------------------------


T = TypeVar("T")


def _timed(samples: list[float], fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call fn(*args, **kwargs), appending the seconds it took to `samples`."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    samples.append(time.perf_counter() - start)
    return result


def _skopeo(daemon: Daemon, *args: str) -> None:
    assert SKOPEO is not None
    # --insecure-policy: images this test made itself, no signatures
    res = daemon.in_netns(SKOPEO, "--insecure-policy", *args, timeout=300)
    assert res.returncode == 0, res.stderr


def _image_id(daemon: Daemon, reference: str) -> str:
    res = daemon.cli("image", "inspect", reference, check=True)
    return str(json.loads(res.stdout)[0]["Id"])


def _stored_blobs(daemon: Daemon) -> set[str]:
    return {p.name for p in daemon.data_root.rglob("*") if len(p.name) == 64 and p.is_file()}


@pytest.mark.timeout(1200)
def test_bench_push_pull_vs_skopeo(
    daemon: Daemon, registries: Registries, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = registries.work  # every big file of the benchmark is under it
    names: list[str] = []
    try:
        started = time.perf_counter()
        archive, layers = make_image_archive(work)
        layer_digests = [str(layer["digest"]) for layer in layers]
        size_mb = sum(int(layer["size"]) for layer in layers) / (1 << 20)
        generated = time.perf_counter() - started
        daemon.cli("load", "-q", "-i", str(archive), timeout=300, check=True)
        archive.unlink()
        names.append(IMAGE)
        image_id = _image_id(daemon, IMAGE)
        saved = work / "img.tar"
        daemon.cli("save", "-o", str(saved), IMAGE, timeout=300, check=True)
        layout = work / "saved-layout"  # `pyswarm save` writes an OCI layout, too
        with tarfile.open(saved) as tar:
            tar.extractall(layout, filter="data")
        prepared = time.perf_counter() - started

        push: list[float] = []
        pull: list[float] = []
        skopeo_push: list[float] = []
        skopeo_archive: list[float] = []
        skopeo_pull: list[float] = []
        untar: list[float] = []
        # crossed, to tell the client from the server: skopeo pulling from our server,
        # pyswarm pulling from docker-registry
        skopeo_from_ours: list[float] = []
        ours_from_reference: list[float] = []

        def pull_afresh(samples: list[float], name: str) -> None:
            """rmi every name of the image (its blobs and layers go), then a timed pull."""
            daemon.cli("rmi", *names, check=True)
            names.clear()
            left = _stored_blobs(daemon)
            assert not any(d.removeprefix("sha256:") in left for d in layer_digests)
            _timed(samples, daemon.cli, "pull", name, timeout=300, check=True)
            names.append(name)
            assert _image_id(daemon, name) == image_id

        for run in range(RUNS):
            # pyswarm: push to a fresh `pyswarm registry serve`, rmi, pull back
            address = registries.pyswarm(5000 + run)
            name = f"{address}/bench/img:1"
            daemon.cli("tag", image_id, name, check=True)
            names.append(name)
            pushed = _timed(push, daemon.cli, "push", name, timeout=300, check=True).stdout
            assert pushed.count(": Pushed") == LAYERS, pushed
            pull_afresh(pull, name)
            from_ours = work / f"oci-ours-{run}"
            ref = f"docker://{name}"
            _timed(
                skopeo_from_ours,
                _skopeo,
                daemon,
                "copy",
                "--src-tls-verify=false",
                ref,
                f"oci:{from_ours}:1",
            )
            shutil.rmtree(from_ours)
            assert registries.stop(address) == 0
            shutil.rmtree(work / f"pyswarm-registry-{5000 + run}")

            # baseline: skopeo copy into docker-registry and back out to an OCI layout.
            # From docker-archive:img.tar skopeo decompresses each layer and gzips it
            # again (its stored digests differ from ours); from the OCI layout in the
            # same img.tar (extracted: `oci:`) it sends our gzip blobs as they are.
            address = registries.reference(5100 + run)
            ref = f"docker://{address}/bench/img:1"
            source = f"docker-archive:{saved}"
            _timed(skopeo_archive, _skopeo, daemon, "copy", "--dest-tls-verify=false", source, ref)
            registries.stop(address)  # docker-registry ends by the signal itself (-15)
            shutil.rmtree(work / f"docker-registry-{5100 + run}")

            address = registries.reference(5200 + run)
            ref = f"docker://{address}/bench/img:1"
            source = f"oci:{layout}:1"
            _timed(skopeo_push, _skopeo, daemon, "copy", "--dest-tls-verify=false", source, ref)
            out = work / f"oci-{run}"
            _timed(
                skopeo_pull, _skopeo, daemon, "copy", "--src-tls-verify=false", ref, f"oci:{out}:1"
            )
            copied = {p.name for p in (out / "blobs" / "sha256").iterdir()}
            assert {d.removeprefix("sha256:") for d in layer_digests} <= copied  # as they were
            _timed(untar, _unpack, out / "blobs" / "sha256", layer_digests, work / "unpacked")
            shutil.rmtree(work / "unpacked")
            pull_afresh(ours_from_reference, f"{address}/bench/img:1")
            registries.stop(address)  # docker-registry ends by the signal itself (-15)
            shutil.rmtree(work / f"docker-registry-{5200 + run}")
            shutil.rmtree(out)

        startup: list[float] = []
        for _ in range(RUNS):
            _timed(startup, daemon.cli, "version", check=True)
        client = statistics.median(startup)
        skopeo_startup: list[float] = []
        for _ in range(RUNS):
            _timed(skopeo_startup, _skopeo, daemon, "--version")
        skopeo_client = statistics.median(skopeo_startup)
        assert daemon.proc is not None
        daemon_peak = _peak_rss_kb(daemon.proc.pid)
    finally:
        registries.stop_all()
        if names:
            daemon.cli("rmi", *names)
        shutil.rmtree(work, ignore_errors=True)

    rows = [
        ("push (skopeo from oci: layout, same gzip blobs)", push, skopeo_push),
        ("push (skopeo from docker-archive:, re-gzips)", push, skopeo_archive),
        ("pull (skopeo to oci: layout, no unpacking)", pull, skopeo_pull),
        ("  the same, both from pyswarm registry serve", pull, skopeo_from_ours),
        ("  the same, both from docker-registry", ours_from_reference, skopeo_pull),
        (
            "pull (skopeo + tar -xzf of the layers, 4 jobs)",
            pull,
            [a + b for a, b in zip(skopeo_pull, untar, strict=True)],
        ),
    ]
    with capsys.disabled():
        print(
            f"\nregistry: {LAYERS} layers, {size_mb:.0f} MiB compressed (random data); "
            f"generated in {generated:.1f} s, prepared (+ load + save) in {prepared:.1f} s; "
            f"{RUNS} runs each (the data is big), medians; "
            f"client start-up: pyswarm {client * 1000:.0f} ms, skopeo {skopeo_client * 1000:.0f} ms"
        )
        print(
            f"{'':48} {'pyswarm':>8} {'skopeo':>8} {'ratio':>6} {'net':>6}"
            "  runs (s): pyswarm | skopeo"
        )
        for what, ours, theirs in rows:
            mine, base = statistics.median(ours), statistics.median(theirs)
            net = (mine - client) / (base - skopeo_client)
            print(
                f"{what:48} {mine:7.2f}s {base:7.2f}s {mine / base:5.2f}x {net:5.2f}x  "
                f"{' '.join(f'{x:.2f}' for x in ours)} | {' '.join(f'{x:.2f}' for x in theirs)}"
            )
        print("target: pyswarm <= 1.20x skopeo (net: each side's client start-up subtracted)")
        peaks = [f"{kind} {kb / 1024:.0f} MB" for kind, kb in registries.peak_rss_kb.items()]
        print(f"peak RSS: pyswarm daemon {daemon_peak / 1024:.0f} MB, {', '.join(peaks)}")
