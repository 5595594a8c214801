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
from typing import TYPE_CHECKING

from api import objects_pb2 as objects
from api.errors import PyswarmError
from manager import store as st
from manager.raft import RaftError

if TYPE_CHECKING:
    from manager.manager import Manager

log = logging.getLogger(__name__)
MEMBERSHIP_TIMEOUT = 10.0


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
        watch = self.manager.store.watch(kinds={"node"})
        try:
            dirty = True
            while not self._stop.is_set():
                if dirty:
                    self.reconcile_all()
                    dirty = False
                event = watch.get(timeout=0.5)
                dirty = isinstance(event, st.Event)
        finally:
            watch.close()

    def reconcile_all(self) -> None:
        for node in self.manager.store.view(lambda tx: st.find_nodes(tx, by=st.All())):
            if node.spec.desired_role == node.role:
                continue
            try:
                self.reconcile(node.meta.id)
            except (PyswarmError, RaftError) as exc:
                log.warning("role change of node %s not done yet: %s", node.meta.id, exc)

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
