"""The filter pipeline: which nodes may take a task, and why the others may not.

Usage::

    pipeline = Pipeline()
    pipeline.set_task(task)
    feasible = [info for info in nodes.values() if pipeline.process(info)]
    if not feasible:
        reason = pipeline.explain()  # "no suitable node (insufficient memory on 2 nodes)"
"""

from __future__ import annotations

from collections.abc import Sequence

from api import objects_pb2 as objects
from manager.scheduler.filters import Filter, default_filters
from manager.scheduler.nodeinfo import NodeInfo

NO_SUITABLE_NODE = "no suitable node"


class Pipeline:
    """Runs the filters that apply to the current task; counts, per filter, the nodes
    it was the first to turn away."""

    def __init__(self, filters: Sequence[Filter] | None = None) -> None:
        self._filters = list(default_filters() if filters is None else filters)
        self._active: list[Filter] = []
        self._dynamic: list[Filter] = []
        self._failures: dict[Filter, int] = {}  # nodes each filter turned away

    def set_task(self, task: objects.Task) -> None:
        """Select the filters relevant to `task` and reset the counts."""
        self._active = [f for f in self._filters if f.set_task(task)]
        self._dynamic = [f for f in self._active if f.dynamic]
        self._failures = {}

    def reset(self) -> None:
        """Forget the counts (to explain about a new set of nodes, same task)."""
        self._failures = {}

    @property
    def has_dynamic(self) -> bool:
        """Whether placing tasks on a node can change its answer (see `recheck`)."""
        return bool(self._dynamic)

    def process(self, info: NodeInfo) -> bool:
        """Whether every active filter accepts the node."""
        return self._run(self._active, info)

    def recheck(self, info: NodeInfo) -> bool:
        """`process` for a node that passed it before and has since taken tasks: only
        the filters those tasks can change."""
        return self._run(self._dynamic, info)

    def explain(self) -> str:
        """docker's message for a task no node took: most frequent reason first."""
        ranked = sorted(self._failures, key=lambda f: (-self._failures[f], self._active.index(f)))
        reasons = "; ".join(f.explain(self._failures[f]) for f in ranked)
        return f"{NO_SUITABLE_NODE} ({reasons})" if reasons else NO_SUITABLE_NODE

    def _run(self, filters: list[Filter], info: NodeInfo) -> bool:
        for f in filters:
            if not f.check(info):
                self._failures[f] = self._failures.get(f, 0) + 1
                return False
        return True
