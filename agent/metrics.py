"""Prometheus metrics of the engine, served on `--metrics-addr` (127.0.0.1:9323)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .engine import Engine


class EngineCollector(Collector):
    """Reads counts from the engine at scrape time; nothing to keep in sync."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        states = GaugeMetricFamily(
            "pyswarm_engine_containers", "Containers by state", labels=["state"]
        )
        counts: dict[str, int] = {}
        for record in self.engine.containers.records(all=True):
            counts[record.state.value] = counts.get(record.state.value, 0) + 1
        for state in ("created", "running", "restarting", "exited", "dead"):
            states.add_metric([state], counts.get(state, 0))
        yield states
        yield GaugeMetricFamily(
            "pyswarm_engine_images", "Images in the store", value=len(self.engine.images.list())
        )
