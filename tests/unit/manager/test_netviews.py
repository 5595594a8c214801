"""Network views (manager.netviews): what each node is told about the overlay networks
it takes part in, from `ViewState` directly and from the `NetViews` thread with a
recording `send`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from api import objects_pb2 as objects
from api import swarm_pb2 as swarm
from manager import store as st
from manager.netviews import NetViews, ViewState
from manager.networkcontrol import CONTAINER_NAME_LABEL, INGRESS_NAME, Networks
from tests.daemons import wait_for

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

TIMEOUT = 10.0
NODE_ADDRS = {"n1": "192.0.2.1", "n2": "192.0.2.2", "n3": "192.0.2.3"}


# ---- a small swarm, written straight into the store ------------------------------------


class Lab:
    def __init__(self) -> None:
        self.store = st.MemoryStore()
        self.networks = Networks(self.store, clock=time.monotonic)
        for node_id, addr in NODE_ADDRS.items():
            self.node(node_id, addr)

    def node(self, node_id: str, addr: str) -> None:
        node = objects.Node()
        node.meta.id = node_id
        node.spec.name = node_id
        node.status.addr = addr
        self.store.update(lambda tx: st.create_node(tx, node))

    def change_node(self, node_id: str, *, addr: str = "", ingress: str = "") -> None:
        def change(tx: st.Tx) -> None:
            node = st.get_node(tx, node_id)
            assert node is not None
            if addr:
                node.status.addr = addr
            if ingress:
                node.ingress.network.CopyFrom(self.net(INGRESS_NAME))
                node.ingress.addresses[:] = [ingress]
            st.update_node(tx, node)

        self.store.update(change)

    def network(self, name: str, subnet: str) -> objects.Network:
        spec = objects.NetworkSpec(name=name)
        spec.ipam.subnet = subnet
        return self.networks.create_network(spec)

    def net(self, ref: str) -> objects.Network:
        return self.networks.get_network(ref)

    def service(
        self,
        name: str,
        networks: dict[str, list[str]],
        *,
        vips: dict[str, str] | None = None,
        mode: str = "",
        ports: list[objects.PortConfig] | None = None,
    ) -> None:
        service = objects.Service()
        service.meta.id = f"svc-{name}"
        service.spec.name = name
        service.spec.endpoint.mode = mode
        for ref, aliases in networks.items():
            service.spec.task.networks.add(target=self.net(ref).meta.id, aliases=aliases)
        for ref, addr in (vips or {}).items():
            service.endpoint.virtual_ips.add(network_id=self.net(ref).meta.id, addr=addr)
        service.endpoint.ports.extend(ports or [])
        self.store.update(lambda tx: st.create_service(tx, service))

    def set_ports(self, name: str, ports: list[objects.PortConfig]) -> None:
        def change(tx: st.Tx) -> None:
            service = st.get_service(tx, f"svc-{name}")
            assert service is not None
            del service.endpoint.ports[:]
            service.endpoint.ports.extend(ports)
            st.update_service(tx, service)

        self.store.update(change)

    def task(
        self,
        task_id: str,
        *,
        service: str,
        node: str,
        addresses: dict[str, str],
        state: objects.TaskState.ValueType = objects.TASK_RUNNING,
        desired: objects.TaskState.ValueType = objects.TASK_RUNNING,
        aliases: list[str] | None = None,
        slot: int = 1,
    ) -> None:
        task = objects.Task(node_id=node, slot=slot, desired_state=desired)
        task.meta.id = task_id
        if service:
            task.service_id = f"svc-{service}"
            task.service_name = service
        else:
            task.spec.container.labels[CONTAINER_NAME_LABEL] = f"box-{task_id}"
        task.status.state = state
        for ref, address in addresses.items():
            attachment = task.networks.add(addresses=[address], aliases=aliases or [])
            attachment.network.CopyFrom(self.net(ref))
        self.store.update(lambda tx: st.create_task(tx, task))

    def set_task(
        self,
        task_id: str,
        *,
        state: objects.TaskState.ValueType | None = None,
        desired: objects.TaskState.ValueType | None = None,
    ) -> None:
        def change(tx: st.Tx) -> None:
            task = st.get_task(tx, task_id)
            assert task is not None
            if state is not None:
                task.status.state = state
            if desired is not None:
                task.desired_state = desired
            st.update_task(tx, task)

        self.store.update(change)

    def state(self) -> ViewState:
        """A ViewState loaded from the store with every network's view built."""
        state = ViewState()
        self.store.view(state.load)
        for network_id in list(state.networks):
            state.rebuild(network_id)
        return state


def names(views: swarm.NetworkViews) -> list[str]:
    return sorted(v.network.spec.name for v in views.networks)


def view_of(views: swarm.NetworkViews, name: str) -> swarm.NetworkView:
    [view] = [v for v in views.networks if v.network.spec.name == name]
    return view


def endpoint(view: swarm.NetworkView, endpoint_id: str) -> swarm.NetworkEndpoint:
    [found] = [e for e in view.endpoints if e.id == endpoint_id]
    return found


def ingress_port(published: int, mode: str = "ingress") -> objects.PortConfig:
    return objects.PortConfig(
        protocol="tcp", target_port=80, published_port=published, publish_mode=mode
    )


@pytest.fixture
def lab() -> Lab:
    lab = Lab()
    lab.network("front", "10.1.0.0/24")
    lab.network("back", "10.2.0.0/24")
    lab.network("idle", "10.3.0.0/24")
    return lab


# ---- ViewState ----------------------------------------------------------------------


def test_a_node_gets_views_only_for_networks_it_has_live_tasks_on(lab: Lab) -> None:
    lab.service("web", {"front": []})
    lab.service("db", {"back": []})
    lab.task("web1", service="web", node="n1", addresses={"front": "10.1.0.5/24"})
    lab.task("db1", service="db", node="n2", addresses={"back": "10.2.0.5/24"})
    lab.task(
        "web-old",
        service="web",
        node="n3",
        addresses={"front": "10.1.0.9/24"},
        state=objects.TASK_SHUTDOWN,
    )
    state = lab.state()
    assert names(state.views_for("n1", 1)) == ["front"]
    assert names(state.views_for("n2", 1)) == ["back"]
    assert names(state.views_for("n3", 1)) == []  # only a terminal task there
    assert state.views_for("n1", 7).version == 7


def test_a_task_not_yet_on_a_node_is_in_no_view(lab: Lab) -> None:
    lab.service("web", {"front": []})
    lab.task(
        "pending",
        service="web",
        node="",
        addresses={"front": "10.1.0.5/24"},
        state=objects.TASK_PENDING,
    )
    lab.task("web1", service="web", node="n1", addresses={"front": "10.1.0.6/24"})
    view = view_of(lab.state().views_for("n1", 1), "front")
    assert [e.id for e in view.endpoints] == ["web1"]


def test_endpoints_carry_bare_addresses_node_addrs_names_and_aliases(lab: Lab) -> None:
    lab.service("web", {"front": ["www"]})
    lab.task(
        "t1",
        service="web",
        node="n1",
        addresses={"front": "10.1.0.5/24"},
        aliases=["www"],
        slot=3,
    )
    lab.task("t2", service="web", node="n2", addresses={"front": "10.1.0.6/24"}, slot=4)
    view = view_of(lab.state().views_for("n1", 1), "front")
    assert view.network.vni == lab.net("front").vni
    assert view.network.subnet == "10.1.0.0/24"
    first = endpoint(view, "t1")
    assert first.address == "10.1.0.5"  # no prefix
    assert first.node_addr == "192.0.2.1"
    assert first.name == "web.3.t1"
    assert (first.service_id, first.service_name) == ("svc-web", "web")
    assert list(first.aliases) == ["www"]
    second = endpoint(view, "t2")
    assert (second.address, second.node_addr) == ("10.1.0.6", "192.0.2.2")
    # the other node's task is in n1's view (its VXLAN peer), and the other way round
    assert [e.id for e in view_of(lab.state().views_for("n2", 1), "front").endpoints] == [
        "t1",
        "t2",
    ]


@pytest.mark.parametrize(
    ("state", "desired", "ready"),
    [
        (objects.TASK_RUNNING, objects.TASK_RUNNING, True),
        (objects.TASK_STARTING, objects.TASK_RUNNING, False),
        (objects.TASK_ASSIGNED, objects.TASK_RUNNING, False),
        (objects.TASK_RUNNING, objects.TASK_SHUTDOWN, False),  # being stopped
        (objects.TASK_RUNNING, objects.TASK_REMOVE, False),
    ],
)
def test_an_endpoint_is_ready_only_running_and_desired_running(
    lab: Lab,
    state: objects.TaskState.ValueType,
    desired: objects.TaskState.ValueType,
    ready: bool,
) -> None:
    lab.service("web", {"front": []})
    lab.task(
        "t1",
        service="web",
        node="n1",
        addresses={"front": "10.1.0.5/24"},
        state=state,
        desired=desired,
    )
    view = view_of(lab.state().views_for("n1", 1), "front")
    assert endpoint(view, "t1").ready is ready


def test_a_standalone_container_is_named_by_its_label_and_ready(lab: Lab) -> None:
    lab.task(
        "att",
        service="",
        node="n1",
        addresses={"front": "10.1.0.7/24"},
        state=objects.TASK_PENDING,
    )
    found = endpoint(view_of(lab.state().views_for("n1", 1), "front"), "att")
    assert (found.name, found.address, found.service_id) == ("box-att", "10.1.0.7", "")
    assert found.ready


def test_services_carry_a_bare_vip_their_mode_and_aliases(lab: Lab) -> None:
    lab.service("web", {"front": ["www", "site"]}, vips={"front": "10.1.0.2/24"})
    lab.service("rr", {"front": []}, mode="dnsrr")
    lab.service("db", {"back": []}, vips={"back": "10.2.0.2/24"})
    lab.task("t1", service="web", node="n1", addresses={"front": "10.1.0.5/24"})
    view = view_of(lab.state().views_for("n1", 1), "front")
    by_name = {s.name: s for s in view.services}
    assert sorted(by_name) == ["rr", "web"]  # not db: it is not on front
    web = by_name["web"]
    assert (web.service_id, web.vip, web.mode) == ("svc-web", "10.1.0.2", "vip")
    assert list(web.aliases) == ["www", "site"]
    assert (by_name["rr"].vip, by_name["rr"].mode) == ("", "dnsrr")


def test_ingress_goes_to_every_node_while_a_service_publishes_an_ingress_port(lab: Lab) -> None:
    lab.networks.ensure_ingress()
    lab.change_node("n1", ingress="10.255.0.2/16")
    lab.change_node("n2", ingress="10.255.0.3/16")
    lab.service("web", {}, ports=[ingress_port(8080)])
    lab.service("direct", {}, ports=[ingress_port(9090, mode="host")])
    lab.task("t1", service="web", node="n1", addresses={INGRESS_NAME: "10.255.0.9/16"})
    state = lab.state()
    for node_id in NODE_ADDRS:  # n3 has no task and no ingress address yet: still told
        assert names(state.views_for(node_id, 1)) == [INGRESS_NAME]
    view = view_of(state.views_for("n3", 1), INGRESS_NAME)
    assert view.network.spec.ingress
    assert [s.name for s in view.services] == ["web"]  # host-mode ports are not the mesh's
    assert [(p.published_port, p.target_port) for p in view.services[0].ports] == [(8080, 80)]
    nodes = {e.id: e for e in view.endpoints if e.id in NODE_ADDRS}
    assert {k: (e.address, e.node_addr) for k, e in nodes.items()} == {
        "n1": ("10.255.0.2", "192.0.2.1"),
        "n2": ("10.255.0.3", "192.0.2.2"),
    }
    assert endpoint(view, "t1").address == "10.255.0.9"


def test_ingress_goes_to_no_node_without_published_ingress_ports(lab: Lab) -> None:
    lab.networks.ensure_ingress()
    lab.change_node("n1", ingress="10.255.0.2/16")
    lab.service("direct", {}, ports=[ingress_port(9090, mode="host")])
    state = lab.state()
    for node_id in NODE_ADDRS:
        assert names(state.views_for(node_id, 1)) == []


# ---- the NetViews thread ------------------------------------------------------------


class Recorder:
    """The dispatcher's side: every message sent, per node."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: list[tuple[str, swarm.SessionMessage]] = []

    def __call__(self, node_id: str, message: swarm.SessionMessage) -> bool:
        with self._lock:
            self.sent.append((node_id, message))
        return True

    def to(self, node_id: str) -> list[swarm.NetworkViews]:
        with self._lock:
            return [m.networks for n, m in self.sent if n == node_id]

    def last(self, node_id: str) -> swarm.NetworkViews | None:
        sent = self.to(node_id)
        return sent[-1] if sent else None

    def last_names(self, node_id: str) -> list[str] | None:
        views = self.last(node_id)
        return None if views is None else names(views)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def started(lab: Lab, recorder: Recorder) -> Iterator[NetViews]:
    stage = NetViews(lab.store, send=recorder, period=0.01)
    yield stage
    stage.stop()


def wait_names(recorder: Recorder, node_id: str, expected: list[str]) -> swarm.NetworkViews:
    wait_for(
        lambda: recorder.last_names(node_id) == expected,
        timeout=TIMEOUT,
        what=f"{node_id} told {expected}",
    )
    views = recorder.last(node_id)
    assert views is not None
    return views


def test_the_thread_sends_each_node_its_networks_and_follows_changes(
    lab: Lab, recorder: Recorder, started: NetViews
) -> None:
    lab.service("web", {"front": []}, vips={"front": "10.1.0.2/24"})
    lab.task("t1", service="web", node="n1", addresses={"front": "10.1.0.5/24"})
    started.start()
    first = wait_names(recorder, "n1", ["front"])
    assert started.current("n1") == first
    assert recorder.last_names("n2") in (None, [])

    # a second task on n2: both nodes get the new endpoint, with a newer version
    lab.task("t2", service="web", node="n2", addresses={"front": "10.1.0.6/24"}, slot=2)
    wait_for(
        lambda: (v := recorder.last("n1")) is not None and len(view_of(v, "front").endpoints) == 2,
        timeout=TIMEOUT,
        what="n1 told of t2",
    )
    second = recorder.last("n1")
    assert second is not None and second.version > first.version
    n2 = wait_names(recorder, "n2", ["front"])
    assert [e.id for e in view_of(n2, "front").endpoints] == ["t1", "t2"]

    # becoming not ready shows up; going terminal disappears from the next view
    lab.set_task("t2", desired=objects.TASK_SHUTDOWN)
    wait_for(
        lambda: (
            (v := recorder.last("n1")) is not None and not endpoint(view_of(v, "front"), "t2").ready
        ),
        timeout=TIMEOUT,
        what="t2 not ready",
    )
    lab.set_task("t2", state=objects.TASK_SHUTDOWN)
    wait_names(recorder, "n2", [])  # n2 has nothing left on front
    wait_for(
        lambda: (
            (v := recorder.last("n1")) is not None
            and [e.id for e in view_of(v, "front").endpoints] == ["t1"]
        ),
        timeout=TIMEOUT,
        what="t2 gone from n1's view",
    )
    for node_id in ("n1", "n2"):
        versions = [v.version for v in recorder.to(node_id)]
        assert versions == sorted(set(versions)), f"{node_id}: {versions}"
        assert started.current(node_id) == recorder.last(node_id)
    assert started.current("n3").networks == []


def test_a_node_address_change_reaches_its_peers(
    lab: Lab, recorder: Recorder, started: NetViews
) -> None:
    lab.service("web", {"front": []})
    lab.task("t1", service="web", node="n1", addresses={"front": "10.1.0.5/24"})
    lab.task("t2", service="web", node="n2", addresses={"front": "10.1.0.6/24"}, slot=2)
    started.start()
    wait_names(recorder, "n1", ["front"])
    lab.change_node("n2", addr="198.51.100.2")
    wait_for(
        lambda: (
            (v := recorder.last("n1")) is not None
            and endpoint(view_of(v, "front"), "t2").node_addr == "198.51.100.2"
        ),
        timeout=TIMEOUT,
        what="n1 told n2's new address",
    )


def test_the_ingress_view_comes_and_goes_with_published_ingress_ports(
    lab: Lab, recorder: Recorder, started: NetViews
) -> None:
    lab.networks.ensure_ingress()
    lab.change_node("n1", ingress="10.255.0.2/16")
    lab.service("web", {"front": []})
    lab.task("t1", service="web", node="n1", addresses={"front": "10.1.0.5/24"})
    started.start()
    wait_names(recorder, "n1", ["front"])

    lab.set_ports("web", [ingress_port(8080)])
    wait_names(recorder, "n1", ["front", INGRESS_NAME])
    for node_id in ("n2", "n3"):
        views = wait_names(recorder, node_id, [INGRESS_NAME])
        ingress = view_of(views, INGRESS_NAME)
        assert [(e.id, e.address) for e in ingress.endpoints] == [("n1", "10.255.0.2")]
        assert [s.name for s in ingress.services] == ["web"]

    # a node given its ingress address later is an endpoint for everyone
    lab.change_node("n3", ingress="10.255.0.4/16")
    wait_for(
        lambda: (
            (v := recorder.last("n2")) is not None
            and {e.id for e in view_of(v, INGRESS_NAME).endpoints} == {"n1", "n3"}
        ),
        timeout=TIMEOUT,
        what="n3's ingress endpoint sent to n2",
    )

    lab.set_ports("web", [])
    wait_names(recorder, "n1", ["front"])
    wait_names(recorder, "n2", [])
    wait_names(recorder, "n3", [])
    for node_id in NODE_ADDRS:
        assert started.current(node_id) == recorder.last(node_id)


def test_a_node_joining_while_ingress_is_published_is_told(
    lab: Lab, recorder: Recorder, started: NetViews
) -> None:
    lab.networks.ensure_ingress()
    lab.service("web", {}, ports=[ingress_port(8080)])
    started.start()
    wait_names(recorder, "n1", [INGRESS_NAME])
    lab.node("n4", "192.0.2.4")
    wait_names(recorder, "n4", [INGRESS_NAME])


def test_a_restarted_thread_starts_with_the_whole_picture(
    lab: Lab, recorder: Recorder, started: NetViews
) -> None:
    lab.service("web", {"front": []})
    lab.task("t1", service="web", node="n1", addresses={"front": "10.1.0.5/24"})
    started.start()
    before = wait_names(recorder, "n1", ["front"])
    started.stop()
    lab.task("t2", service="web", node="n1", addresses={"front": "10.1.0.6/24"}, slot=2)
    started.start()
    wait_for(
        lambda: (v := recorder.last("n1")) is not None and len(view_of(v, "front").endpoints) == 2,
        timeout=TIMEOUT,
        what="n1 told of t2 after a restart",
    )
    after = recorder.last("n1")
    assert after is not None and after.version > before.version
