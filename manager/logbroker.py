"""Task logs on demand: `service logs` asks the nodes that ran the tasks.

Logs stay on the nodes (each container's log file). A reader subscribes with the tasks
it wants; the broker sends a LogSubscription on the session stream of every node that
has some of them, and each node answers on a PublishLogs call tagged with the
subscription id, ending with an `end` message unless following. A node without a
session (down) is reported to the reader as an error line at once, so logs of the
other nodes still flow. When the reader goes away, nodes get a `cancel`.
"""

from __future__ import annotations

import queue
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from api import swarm_pb2 as swarm

Send = Callable[[str, swarm.SessionMessage], bool]  # node id, message → delivered?


@dataclass
class Subscription:
    id: str
    nodes: set[str]
    follow: bool
    names: dict[str, str] = field(default_factory=dict)  # node id -> hostname, for errors
    messages: queue.Queue[swarm.LogMessage] = field(default_factory=queue.Queue)


class LogBroker:
    def __init__(self, send: Send) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._subs: dict[str, Subscription] = {}

    def subscribe(
        self,
        tasks_by_node: dict[str, list[str]],
        *,
        follow: bool,
        tail: int,
        since: float,
        node_names: dict[str, str],
    ) -> Subscription:
        sub = Subscription(id=secrets.token_hex(8), nodes=set(), follow=follow, names=node_names)
        with self._lock:
            self._subs[sub.id] = sub
        for node_id, task_ids in tasks_by_node.items():
            request = swarm.LogSubscription(
                id=sub.id, task_ids=task_ids, follow=follow, tail=tail, since=since
            )
            if self._send(node_id, swarm.SessionMessage(log_subscription=request)):
                sub.nodes.add(node_id)
            else:
                name = node_names.get(node_id, node_id)
                sub.messages.put(
                    swarm.LogMessage(
                        subscription_id=sub.id,
                        node_id=node_id,
                        error=f"node {name} is not available: logs of its tasks are missing",
                    )
                )
        return sub

    def read(self, sub: Subscription, *, active: Callable[[], bool]) -> Iterator[swarm.LogMessage]:
        """The subscription's messages until every node has ended (or, following, until
        the reader is no longer `active`)."""
        waiting = set(sub.nodes)
        try:
            while active() and (waiting or not sub.messages.empty()):
                try:
                    message = sub.messages.get(timeout=0.5)
                except queue.Empty:
                    continue
                if message.end:
                    waiting.discard(message.node_id)
                    continue
                yield message
        finally:
            self.cancel(sub)

    def cancel(self, sub: Subscription) -> None:
        with self._lock:
            if self._subs.pop(sub.id, None) is None:
                return
        for node_id in sub.nodes:
            self._send(
                node_id,
                swarm.SessionMessage(
                    log_subscription=swarm.LogSubscription(id=sub.id, cancel=True)
                ),
            )

    def publish(self, node_id: str, message: swarm.LogMessage) -> bool:
        """A node's message for a subscription; False once the reader is gone."""
        with self._lock:
            sub = self._subs.get(message.subscription_id)
        if sub is None:
            return False
        message.node_id = node_id
        sub.messages.put(message)
        return True

    def node_lost(self, node_id: str) -> None:
        """A node's session ended: its part of every subscription ends with an error."""
        with self._lock:
            subs = [s for s in self._subs.values() if node_id in s.nodes]
        for sub in subs:
            name = sub.names.get(node_id, node_id)
            sub.messages.put(
                swarm.LogMessage(
                    subscription_id=sub.id,
                    node_id=node_id,
                    error=f"node {name} disconnected: logs of its tasks are incomplete",
                )
            )
            sub.messages.put(swarm.LogMessage(subscription_id=sub.id, node_id=node_id, end=True))
