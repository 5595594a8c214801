"""The control API's networks (manager.networkcontrol) against a real in-memory store:
VNI and subnet allocation, spec validation, removal rules, prune, and the standalone
containers' attach/detach."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterator

import pytest

from api import objects_pb2 as objects
from api.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, Unavailable
from api.networks import network_mtu
from manager import store as st
from manager.allocator import Allocator
from manager.networkcontrol import (
    FIRST_VNI,
    INGRESS_NAME,
    INGRESS_SUBNET,
    Networks,
    attach,
    detach,
    validate_network_spec,
)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def spec(
    name: str,
    *,
    subnet: str = "",
    gateway: str = "",
    ip_range: str = "",
    driver: str = "",
    attachable: bool = False,
    options: dict[str, str] | None = None,
) -> objects.NetworkSpec:
    s = objects.NetworkSpec(name=name, driver=driver, attachable=attachable)
    s.ipam.subnet = subnet
    s.ipam.gateway = gateway
    s.ipam.ip_range = ip_range
    s.options.update(options or {})
    return s


@pytest.fixture
def store() -> st.MemoryStore:
    return st.MemoryStore()


@pytest.fixture
def networks(store: st.MemoryStore) -> Networks:
    return Networks(store, clock=time.monotonic)


def add_cluster(store: st.MemoryStore, *, pool: list[str], size: int = 0) -> None:
    cluster = objects.Cluster()
    cluster.meta.id = "cluster"
    cluster.spec.name = "default"
    cluster.spec.default_addr_pool.extend(pool)
    cluster.spec.subnet_size = size
    store.update(lambda tx: st.create_cluster(tx, cluster))


def add_service(
    store: st.MemoryStore, name: str, *, networks: list[str], ports: list[objects.PortConfig]
) -> str:
    service = objects.Service()
    service.meta.id = f"svc-{name}"
    service.spec.name = name
    service.spec.task.container.image = "busybox"
    for target in networks:
        service.spec.task.networks.add(target=target)
    service.endpoint.ports.extend(ports)
    store.update(lambda tx: st.create_service(tx, service))
    return service.meta.id


def add_task(
    store: st.MemoryStore,
    task_id: str,
    network: objects.Network,
    *,
    state: objects.TaskState.ValueType = objects.TASK_RUNNING,
) -> None:
    task = objects.Task(service_id="svc", node_id="n1", desired_state=objects.TASK_RUNNING)
    task.meta.id = task_id
    task.status.state = state
    attachment = task.networks.add(addresses=[_first_host(network)])
    attachment.network.CopyFrom(network)
    store.update(lambda tx: st.create_task(tx, task))


def _first_host(network: objects.Network) -> str:
    subnet = ipaddress.IPv4Network(network.subnet)
    return f"{subnet[2]}/{subnet.prefixlen}"


def set_task_state(store: st.MemoryStore, task_id: str, state: objects.TaskState.ValueType) -> None:
    def change(tx: st.Tx) -> None:
        task = st.get_task(tx, task_id)
        assert task is not None
        task.status.state = state
        st.update_task(tx, task)

    store.update(change)


def stored_names(store: st.MemoryStore) -> set[str]:
    return {n.spec.name for n in store.view(lambda tx: st.find_networks(tx))}


# ---- allocation --------------------------------------------------------------------------


def test_vnis_start_at_4096_and_are_unique(networks: Networks) -> None:
    made = [networks.create_network(spec(f"net{i}")) for i in range(5)]
    vnis = [n.vni for n in made]
    assert vnis[0] == FIRST_VNI == 4096
    assert len(set(vnis)) == 5
    assert all(v >= 4096 for v in vnis)


def test_a_removed_networks_vni_is_free_again_and_live_ones_stay_unique(
    networks: Networks,
) -> None:
    a, b, _c = (networks.create_network(spec(n)) for n in ("a", "b", "c"))
    networks.remove_network("a")
    d = networks.create_network(spec("d"))
    live = [n.vni for n in networks.list_networks()]
    assert len(live) == len(set(live)) == 3
    assert d.vni == a.vni  # the lowest free
    assert b.vni != d.vni


def test_default_pool_hands_out_distinct_slash24s_of_10_0_0_0_8(networks: Networks) -> None:
    made = [networks.create_network(spec(f"net{i}")) for i in range(4)]
    subnets = [ipaddress.IPv4Network(n.subnet) for n in made]
    assert subnets[0] == ipaddress.IPv4Network("10.0.0.0/24")
    for subnet in subnets:
        assert subnet.prefixlen == 24
        assert subnet.subnet_of(ipaddress.IPv4Network("10.0.0.0/8"))
    for i, x in enumerate(subnets):
        for y in subnets[i + 1 :]:
            assert not x.overlaps(y)
    # the gateway is the subnet's first address
    assert [n.gateway for n in made] == [str(s[1]) for s in subnets]


def test_created_network_has_the_overlay_driver_and_is_readable_by_name_and_id(
    networks: Networks,
) -> None:
    made = networks.create_network(spec("front"))
    assert made.spec.driver == "overlay"
    assert networks.get_network("front").meta.id == made.meta.id
    assert networks.get_network(made.meta.id).spec.name == "front"
    with pytest.raises(NotFound, match="network nope not found"):
        networks.get_network("nope")


def test_custom_pool_and_subnet_size_from_the_cluster_spec(
    store: st.MemoryStore, networks: Networks
) -> None:
    add_cluster(store, pool=["10.20.0.0/16"], size=26)
    made = [networks.create_network(spec(f"net{i}")) for i in range(3)]
    assert [n.subnet for n in made] == ["10.20.0.0/26", "10.20.0.64/26", "10.20.0.128/26"]


def test_pool_blocks_are_used_in_order_when_the_first_runs_out(
    store: st.MemoryStore, networks: Networks
) -> None:
    add_cluster(store, pool=["10.20.0.0/24", "10.30.0.0/24"], size=25)
    made = [networks.create_network(spec(f"net{i}")) for i in range(4)]
    assert [n.subnet for n in made] == [
        "10.20.0.0/25",
        "10.20.0.128/25",
        "10.30.0.0/25",
        "10.30.0.128/25",
    ]
    with pytest.raises(Unavailable, match="non-overlapping"):
        networks.create_network(spec("net4"))
    assert "net4" not in stored_names(store)


def test_pool_allocation_skips_user_subnets_and_the_ingress_subnet(
    store: st.MemoryStore, networks: Networks
) -> None:
    networks.ensure_ingress()
    add_cluster(store, pool=["10.255.0.0/16", "10.20.0.0/16"], size=24)
    user = networks.create_network(spec("user", subnet="10.20.0.0/23"))
    auto = networks.create_network(spec("auto"))
    assert auto.subnet == "10.20.2.0/24"  # not in ingress's 10.255/16, not in user's /23
    ingress = ipaddress.IPv4Network(INGRESS_SUBNET)
    for net in (user, auto):
        assert not ipaddress.IPv4Network(net.subnet).overlaps(ingress)


def test_explicit_subnet_overlapping_another_is_a_conflict_naming_it(
    store: st.MemoryStore, networks: Networks
) -> None:
    networks.create_network(spec("first", subnet="10.50.0.0/16"))
    with pytest.raises(Conflict, match=r"overlaps with network first \(10\.50\.0\.0/16\)"):
        networks.create_network(spec("second", subnet="10.50.3.0/24"))
    networks.ensure_ingress()
    with pytest.raises(Conflict, match="network ingress"):
        networks.create_network(spec("third", subnet="10.255.1.0/24"))
    assert stored_names(store) == {"first", INGRESS_NAME}


def test_explicit_subnet_gateway_and_ip_range_are_kept(networks: Networks) -> None:
    made = networks.create_network(
        spec("custom", subnet="172.28.0.0/16", gateway="172.28.5.254", ip_range="172.28.5.0/24")
    )
    assert made.subnet == "172.28.0.0/16"
    assert made.gateway == "172.28.5.254"
    assert made.spec.ipam.ip_range == "172.28.5.0/24"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subnet": "10.9.0.0/30"}, "too small"),
        ({"subnet": "10.9.0.0/31"}, "too small"),
        ({"subnet": "10.9.0.0/32"}, "too small"),
        ({"subnet": "10.9.0.1/24"}, "invalid subnet"),  # host bits set
        ({"subnet": "nonsense"}, "invalid subnet"),
        ({"gateway": "10.9.0.1"}, "need --subnet"),
        ({"ip_range": "10.9.0.0/28"}, "need --subnet"),
        ({"subnet": "10.9.0.0/24", "gateway": "10.10.0.1"}, "not a host address"),
        ({"subnet": "10.9.0.0/24", "gateway": "10.9.0.0"}, "not a host address"),
        ({"subnet": "10.9.0.0/24", "gateway": "10.9.0.255"}, "not a host address"),
        ({"subnet": "10.9.0.0/24", "gateway": "ten"}, "invalid gateway"),
        ({"subnet": "10.9.0.0/24", "ip_range": "10.10.0.0/28"}, "not within the subnet"),
        ({"subnet": "10.9.0.0/24", "ip_range": "10.9.0.5/28"}, "invalid ip-range"),
        ({"subnet": "10.9.0.0/24", "ip_range": "x"}, "invalid ip-range"),
        ({"driver": "bridge"}, "not supported in swarm scope"),
        ({"driver": "macvlan"}, "not supported in swarm scope"),
        ({"options": {"mtu": "abc"}}, "invalid mtu"),
        ({"options": {"mtu": "67"}}, "invalid mtu"),
        ({"options": {"mtu": "65536"}}, "invalid mtu"),
        ({"options": {"mtu": "-1500"}}, "invalid mtu"),
        ({"options": {"com.docker.network.driver.mtu": "10"}}, "invalid mtu"),
        ({"options": {"encrypted": ""}}, "unknown network option"),
    ],
)
def test_bad_specs_are_invalid_and_nothing_is_stored(
    store: st.MemoryStore, networks: Networks, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        networks.create_network(spec("bad", **kwargs))  # type: ignore[arg-type]
    assert stored_names(store) == set()


@pytest.mark.parametrize("mtu", ["68", "1400", "9000", "65535"])
def test_valid_mtus_are_accepted_and_read_back(networks: Networks, mtu: str) -> None:
    made = networks.create_network(spec("jumbo", options={"mtu": mtu}))
    assert network_mtu(made) == int(mtu)
    docker = networks.create_network(
        spec("docker-style", options={"com.docker.network.driver.mtu": mtu})
    )
    assert network_mtu(docker) == int(mtu)
    assert network_mtu(networks.create_network(spec("plain"))) == 0


def test_an_mtu_of_unicode_digits_is_invalid_not_a_crash() -> None:
    with pytest.raises(InvalidArgument, match="invalid mtu"):
        validate_network_spec(spec("odd", driver="overlay", options={"mtu": "1²"}))


@pytest.mark.parametrize("name", ["bridge", "host", "none", "Bridge", "HOST"])
def test_reserved_local_network_names_are_refused(
    store: st.MemoryStore, networks: Networks, name: str
) -> None:
    with pytest.raises(InvalidArgument, match="reserved"):
        networks.create_network(spec(name))
    assert stored_names(store) == set()


@pytest.mark.parametrize("name", ["", "-lead", "has space", "x" * 64, "a/b"])
def test_bad_names_are_invalid(networks: Networks, name: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid network name"):
        networks.create_network(spec(name))


def test_a_duplicate_name_already_exists(store: st.MemoryStore, networks: Networks) -> None:
    first = networks.create_network(spec("dup"))
    with pytest.raises(AlreadyExists):
        networks.create_network(spec("dup"))
    with pytest.raises(AlreadyExists):
        networks.create_network(spec("DUP"))  # names ignore case
    assert [n.meta.id for n in networks.list_networks()] == [first.meta.id]


def test_users_cannot_make_an_ingress_network(networks: Networks) -> None:
    s = spec("mesh")
    s.ingress = True
    with pytest.raises(InvalidArgument, match="ingress"):
        networks.create_network(s)


def test_ensure_ingress_is_idempotent(networks: Networks) -> None:
    networks.ensure_ingress()
    networks.ensure_ingress()
    found = [n for n in networks.list_networks() if n.spec.ingress]
    assert len(found) == 1
    ingress = found[0]
    assert ingress.spec.name == INGRESS_NAME
    assert ingress.subnet == INGRESS_SUBNET
    assert ingress.gateway == "10.255.0.1"
    assert ingress.vni >= FIRST_VNI
    with pytest.raises(AlreadyExists):
        networks.create_network(spec(INGRESS_NAME))


def test_ensure_ingress_after_user_networks_gets_its_own_vni(networks: Networks) -> None:
    user = networks.create_network(spec("user"))
    networks.ensure_ingress()
    ingress = networks.get_network(INGRESS_NAME)
    assert ingress.vni != user.vni


# ---- removal and prune ---------------------------------------------------------------


def test_remove_is_refused_while_a_service_names_the_network(
    store: st.MemoryStore, networks: Networks
) -> None:
    net = networks.create_network(spec("backend"))
    add_service(store, "api", networks=[net.meta.id], ports=[])
    with pytest.raises(Conflict, match="network backend is in use by service api"):
        networks.remove_network("backend")
    store.update(lambda tx: st.delete_service(tx, "svc-api"))
    networks.remove_network("backend")
    assert stored_names(store) == set()


def test_remove_is_refused_while_a_live_task_holds_an_address(
    store: st.MemoryStore, networks: Networks
) -> None:
    net = networks.create_network(spec("backend"))
    add_task(store, "task-1", net)
    with pytest.raises(Conflict, match="in use by task task-1"):
        networks.remove_network(net.meta.id)
    set_task_state(store, "task-1", objects.TASK_SHUTDOWN)
    networks.remove_network(net.meta.id)
    with pytest.raises(NotFound):
        networks.remove_network(net.meta.id)


def test_remove_by_name_of_an_unknown_network_is_not_found(networks: Networks) -> None:
    with pytest.raises(NotFound):
        networks.remove_network("ghost")


def test_ingress_is_not_removable_while_a_service_publishes_an_ingress_port(
    store: st.MemoryStore, networks: Networks
) -> None:
    networks.ensure_ingress()
    add_service(
        store,
        "web",
        networks=[],
        ports=[objects.PortConfig(target_port=80, published_port=8080, publish_mode="ingress")],
    )
    add_service(
        store,
        "direct",
        networks=[],
        ports=[objects.PortConfig(target_port=80, published_port=80, publish_mode="host")],
    )
    with pytest.raises(Conflict, match="service web depends on it"):
        networks.remove_network(INGRESS_NAME)
    store.update(lambda tx: st.delete_service(tx, "svc-web"))
    networks.remove_network(INGRESS_NAME)  # host-mode ports do not need the mesh
    assert stored_names(store) == set()


def test_prune_removes_only_unused_networks_never_ingress(
    store: st.MemoryStore, networks: Networks
) -> None:
    networks.ensure_ingress()
    named = networks.create_network(spec("named"))
    held = networks.create_network(spec("held"))
    dead = networks.create_network(spec("dead"))
    networks.create_network(spec("zeta"))
    networks.create_network(spec("alpha"))
    add_service(store, "api", networks=[named.meta.id], ports=[])
    add_task(store, "live", held)
    add_task(store, "gone", dead, state=objects.TASK_FAILED)

    assert networks.prune_networks() == ["alpha", "dead", "zeta"]
    assert stored_names(store) == {INGRESS_NAME, "named", "held"}
    assert networks.prune_networks() == []


# ---- standalone containers ---------------------------------------------------------------


@pytest.fixture
def allocator(store: st.MemoryStore) -> Iterator[Allocator]:
    stage = Allocator(store)
    stage.start()
    yield stage
    stage.stop()


def test_attach_gives_a_standalone_container_an_address_and_detach_frees_it(
    store: st.MemoryStore, networks: Networks, allocator: Allocator
) -> None:
    net = networks.create_network(spec("shared", attachable=True))
    deadline = time.monotonic() + 10
    first = attach(
        networks,
        node_id="n1",
        ref="shared",
        container_id="c1",
        name="box",
        aliases=["db"],
        deadline=deadline,
    )
    assert first.network.meta.id == net.meta.id
    assert first.network.vni == net.vni
    assert list(first.aliases) == ["db"]
    address = ipaddress.IPv4Interface(first.addresses[0])
    assert address.network == ipaddress.IPv4Network(net.subnet)
    assert str(address.ip) != net.gateway
    # attaching the same container again is the same attachment
    again = attach(
        networks,
        node_id="n1",
        ref=net.meta.id,
        container_id="c1",
        name="box",
        aliases=["db"],
        deadline=deadline,
    )
    assert list(again.addresses) == list(first.addresses)
    assert len(store.view(lambda tx: st.find_tasks(tx))) == 1
    with pytest.raises(Conflict, match="in use by task"):
        networks.remove_network("shared")

    detach(store, node_id="n1", container_id="c1")
    assert store.view(lambda tx: st.find_tasks(tx)) == []
    networks.remove_network("shared")


def test_attach_refuses_non_attachable_networks_and_ingress(
    store: st.MemoryStore, networks: Networks
) -> None:
    networks.create_network(spec("private"))
    networks.ensure_ingress()
    for ref in ("private", INGRESS_NAME):
        with pytest.raises(InvalidArgument, match="not attachable"):
            attach(
                networks,
                node_id="n1",
                ref=ref,
                container_id="c1",
                name="box",
                aliases=[],
                deadline=time.monotonic() + 5,
            )
    assert store.view(lambda tx: st.find_tasks(tx)) == []


def test_attach_on_a_full_network_fails_and_leaves_nothing_behind(
    store: st.MemoryStore, networks: Networks, allocator: Allocator
) -> None:
    networks.create_network(spec("tiny", subnet="10.77.0.0/29", attachable=True))
    deadline = time.monotonic() + 10
    for i in range(5):  # .2 to .6: a /29 less network, gateway and broadcast
        attach(
            networks,
            node_id="n1",
            ref="tiny",
            container_id=f"c{i}",
            name=f"box{i}",
            aliases=[],
            deadline=deadline,
        )
    with pytest.raises(Unavailable, match="could not allocate IP"):
        attach(
            networks,
            node_id="n1",
            ref="tiny",
            container_id="c-extra",
            name="extra",
            aliases=[],
            deadline=deadline,
        )
    assert len(store.view(lambda tx: st.find_tasks(tx))) == 5


def test_attach_times_out_without_an_allocator(store: st.MemoryStore) -> None:
    now = [0.0]
    lock = threading.Lock()

    def clock() -> float:
        with lock:
            now[0] += 1.0
            return now[0]

    networks = Networks(store, clock=clock)
    networks.create_network(spec("shared", attachable=True))
    with pytest.raises(Unavailable, match="timed out"):
        attach(
            networks,
            node_id="n1",
            ref="shared",
            container_id="c1",
            name="box",
            aliases=[],
            deadline=3.0,
        )
    assert store.view(lambda tx: st.find_tasks(tx)) == []  # removed on the way out
