"""The role manager (leader only): makes nodes' roles follow `spec.desired_role`.

Promotion: the node's `role` becomes MANAGER; its agent sees that on its session,
renews its certificate (now issued with the manager OU) and asks to join Raft
(RaftMembership.JoinRaft), which adds it as a member. Demotion: the node leaves the
Raft group first — quorum was checked when the demotion was accepted — and only
then does its `role` become WORKER; its agent then stops its manager and renews its
certificate as a worker. Level-triggered: every node change, and leadership itself,
reconciles all nodes again, so a change interrupted by a failover is finished by the
next leader.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from api import objects_pb2 as objects
from api.errors import PyswarmError
from manager import store as st
from manager.raft import RaftError

if TYPE_CHECKING:
    from manager.manager import Manager

log = logging.getLogger(__name__)
MEMBERSHIP_TIMEOUT = 10.0
RESYNC = 10.0  # seconds between full passes over all nodes


class RoleManager:
    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="roles", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=15)
        self._thread = None

    def _run(self) -> None:
        """Events mark nodes whose role differs from the desired one dirty; each commit
        reconciles them. A full pass runs at start and every RESYNC seconds, so a change
        interrupted by a failover or an error is finished later."""
        watch = self.manager.store.watch(kinds={"node"})
        dirty: set[str] = set()
        resync = 0.0
        try:
            while not self._stop.is_set():
                if time.monotonic() >= resync:
                    self.reconcile_all()
                    resync = time.monotonic() + RESYNC
                item = watch.get(timeout=0.5)
                if isinstance(item, st.Event):
                    node = item.obj
                    assert isinstance(node, objects.Node)
                    if item.action != "remove" and node.spec.desired_role != node.role:
                        dirty.add(node.meta.id)
                elif isinstance(item, st.Commit) and dirty:
                    for node_id in sorted(dirty):
                        self._reconcile_logged(node_id)
                    dirty.clear()
        finally:
            watch.close()

    def reconcile_all(self) -> None:
        for node in self.manager.store.view(lambda tx: st.find_nodes(tx, by=st.All())):
            if node.spec.desired_role != node.role:
                self._reconcile_logged(node.meta.id)

    def _reconcile_logged(self, node_id: str) -> None:
        try:
            self.reconcile(node_id)
        except (PyswarmError, RaftError) as exc:
            log.warning("role change of node %s not done yet: %s", node_id, exc)

    def reconcile(self, node_id: str) -> None:
        node = self.manager.store.view(lambda tx: st.get_node(tx, node_id))
        if node is None or node.spec.desired_role == node.role:
            return
        if node.spec.desired_role == objects.WORKER:
            if node.manager_status.raft_addr == self.manager.endpoints.raft_addr:
                # Raft's leader cannot remove itself: hand leadership over, and the next
                # leader's role manager finishes the demotion.
                assert self.manager.raft is not None
                self.manager.raft.transfer_leadership(timeout=MEMBERSHIP_TIMEOUT)
                return
            self.remove_from_raft(node_id)
        desired = node.spec.desired_role

        def update(tx: st.Tx) -> None:
            current = st.get_node(tx, node_id)
            if current is None or current.spec.desired_role != desired:
                return
            current.role = desired
            if desired == objects.WORKER:
                current.ClearField("manager_status")
            st.update_node(tx, current)

        self.manager.store.update_retrying(update)
        log.info("node %s is now a %s", node_id, objects.NodeRole.Name(desired).lower())

    def remove_from_raft(self, node_id: str) -> None:
        node = self.manager.store.view(lambda tx: st.get_node(tx, node_id))
        raft = self.manager.raft
        if node is None or raft is None:
            return
        addr = node.manager_status.raft_addr
        if addr and addr in raft.status().members:
            raft.remove_member(addr, timeout=MEMBERSHIP_TIMEOUT)
            log.info("removed %s (node %s) from Raft", addr, node_id)
