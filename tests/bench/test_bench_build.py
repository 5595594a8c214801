"""Build benchmark (`make bench`): a 10-step Dockerfile built cold, then rebuilt with
nothing changed (target: the rebuild under 10% of the cold build). Printed, not
asserted beyond the rebuild being all cache hits: speed is measured here, not tested.

Each figure is a whole `pyswarm build` process; the client's own start-up (a median of
`pyswarm version` runs, ~0.3-0.4 s on these machines, mostly imports) is printed too
and subtracted for the "net" figures, since it is the same for any command."""

from __future__ import annotations

import statistics
import time

import pytest

pytestmark = pytest.mark.bench

DOCKERFILE = """\
FROM busybox
ARG VERSION=1
ENV APP=/app
WORKDIR /app
COPY data.bin ./
RUN dd if=/dev/urandom of=/app/random bs=1k count=512 2>/dev/null
RUN echo "version $VERSION" > /app/version && sha256sum /app/random > /app/sum
RUN echo "app:x:1000:1000::/app:/bin/sh" >> /etc/passwd
USER app
CMD ["cat", "/app/version"]
"""


RUNS = 5


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _timed_build(daemon, context) -> tuple[float, str]:
    start = time.perf_counter()
    res = daemon.cli("build", "-t", "bench:1", str(context), timeout=300, check=True)
    return time.perf_counter() - start, res.stdout


def test_bench_build_rebuild(daemon, busybox, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    (context / "data.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    cold, _ = _timed_build(daemon, context)
    rebuilds = []
    for _ in range(RUNS):
        seconds, out = _timed_build(daemon, context)
        assert out.count(" ---> Using cache") == 9 and "Running in" not in out
        rebuilds.append(seconds)
    rebuild = statistics.median(rebuilds)
    client = statistics.median(
        _timed(lambda: daemon.cli("version", check=True)) for _ in range(RUNS)
    )
    net_cold, net_rebuild = cold - client, max(rebuild - client, 0.0)
    print(
        f"\nbuild (10 steps): cold {cold * 1000:.0f} ms, rebuild {rebuild * 1000:.0f} ms "
        f"(ratio {rebuild / cold:.1%}); client start-up {client * 1000:.0f} ms; "
        f"net cold {net_cold * 1000:.0f} ms, net rebuild {net_rebuild * 1000:.0f} ms "
        f"(ratio {net_rebuild / net_cold:.1%}, target < 10%)"
    )
