"""The manager's in-memory store: transactions, apply, watches, snapshots, replicas."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from api import objects_pb2 as objects
from api.errors import AlreadyExists, InvalidArgument, NotFound, SequenceConflict
from manager import store as st

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def node(
    node_id: str, hostname: str = "", role: objects.NodeRole.ValueType = objects.WORKER
) -> objects.Node:
    return objects.Node(
        meta=objects.Meta(id=node_id),
        description=objects.NodeDescription(hostname=hostname or f"host-{node_id}"),
        role=role,
    )


def cluster(cluster_id: str = "c1", name: str = "default") -> objects.Cluster:
    return objects.Cluster(meta=objects.Meta(id=cluster_id), spec=objects.ClusterSpec(name=name))


def creating(*objs: objects.Node | objects.Cluster) -> Callable[[st.Tx], None]:
    def create(tx: st.Tx) -> None:
        for obj in objs:
            tx.create(obj)

    return create


def batch_of(*actions: tuple[objects.StoreAction.Kind.ValueType, objects.Node]) -> bytes:
    return objects.StoreBatch(
        actions=[objects.StoreAction(kind=k, node=n) for k, n in actions]
    ).SerializeToString()


def ids(nodes: list[objects.Node]) -> list[str]:
    return [n.meta.id for n in nodes]


def drain(watch: st.Watch) -> list[st.WatchItem]:
    items = []
    while (item := watch.get(timeout=0)) is not None:
        items.append(item)
    return items


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> st.MemoryStore:
    return st.MemoryStore(clock=clock)


def test_create_get_find_update_delete(store: st.MemoryStore, clock: Clock) -> None:
    store.update(creating(node("b"), node("a")))
    assert store.version == 1
    got = store.view(lambda tx: st.get_node(tx, "a"))
    assert got is not None
    assert (got.meta.version, got.meta.created_at, got.meta.updated_at) == (1, 1000.0, 1000.0)
    assert ids(store.view(lambda tx: st.find_nodes(tx))) == ["a", "b"]

    clock.now = 2000.0
    got.spec.availability = objects.DRAIN
    store.update(lambda tx: st.update_node(tx, got))
    again = store.view(lambda tx: st.get_node(tx, "a"))
    assert again is not None
    assert again.spec.availability == objects.DRAIN
    assert (again.meta.version, again.meta.created_at, again.meta.updated_at) == (2, 1000.0, 2000.0)

    store.update(lambda tx: st.delete_node(tx, "a"))
    assert store.view(lambda tx: st.get_node(tx, "a")) is None
    assert store.version == 3


def test_find_selectors(store: st.MemoryStore) -> None:
    store.update(
        creating(
            node("abc1", "Web-1", objects.MANAGER),
            node("abd2", "web-2"),
            node("xyz3", "db"),
            cluster(),
        )
    )

    def find(by: st.Selector) -> list[str]:
        return ids(store.view(lambda tx: st.find_nodes(tx, by=by)))

    assert find(st.ByName("web-1")) == ["abc1"]
    assert find(st.ByIdPrefix("ab")) == ["abc1", "abd2"]
    assert find(st.ByRole(objects.MANAGER)) == ["abc1"]
    assert find(st.All()) == ["abc1", "abd2", "xyz3"]
    clusters = store.view(lambda tx: st.find_clusters(tx, by=st.ByName("DEFAULT")))
    assert [c.meta.id for c in clusters] == ["c1"]
    with pytest.raises(InvalidArgument, match="clusters cannot be found by role"):
        store.view(lambda tx: st.find_clusters(tx, by=st.ByRole(objects.MANAGER)))


def test_view_returns_copies(store: st.MemoryStore) -> None:
    store.update(lambda tx: st.create_node(tx, node("a")))
    got = store.view(lambda tx: st.get_node(tx, "a"))
    assert got is not None
    got.description.hostname = "changed"
    store.view(lambda tx: st.find_nodes(tx))[0].meta.version = 99
    fresh = store.view(lambda tx: st.get_node(tx, "a"))
    assert fresh is not None
    assert (fresh.description.hostname, fresh.meta.version) == ("host-a", 1)


def test_tx_sees_its_own_writes(store: st.MemoryStore) -> None:
    store.update(lambda tx: st.create_node(tx, node("old")))

    def fn(tx: st.Tx) -> list[str]:
        st.create_node(tx, node("new"))
        st.delete_node(tx, "old")
        created = st.get_node(tx, "new")
        assert created is not None
        created.spec.name = "renamed"
        st.update_node(tx, created)  # version 0 in the Tx: created by it
        again = st.get_node(tx, "new")
        assert again is not None
        st.update_node(tx, again)  # and updated twice
        return ids(st.find_nodes(tx))

    assert store.update(fn) == ["new"]
    got = store.view(lambda tx: st.get_node(tx, "new"))
    assert got is not None
    assert (got.spec.name, got.meta.version) == ("renamed", 2)
    assert store.view(lambda tx: st.get_node(tx, "old")) is None


def test_stale_update_is_a_sequence_conflict(store: st.MemoryStore) -> None:
    store.update(lambda tx: st.create_node(tx, node("a")))
    stale = store.view(lambda tx: st.get_node(tx, "a"))
    assert stale is not None
    fresh = objects.Node()
    fresh.CopyFrom(stale)
    fresh.spec.name = "first"
    store.update(lambda tx: st.update_node(tx, fresh))
    before = store.snapshot()

    stale.spec.name = "second"

    def write(tx: st.Tx) -> None:
        st.create_node(tx, node("b"))
        st.update_node(tx, stale)

    with pytest.raises(SequenceConflict, match=r"^update out of sequence$"):
        store.update(write)
    assert store.snapshot() == before


def test_conflict_found_at_apply_maps_to_sequence_conflict(clock: Clock) -> None:
    racers: list[bytes] = []

    def propose(data: bytes) -> bytes:
        # A competing batch lands between the Tx's own checks and the apply of its batch.
        for racer in racers:
            local.apply(racer)
        racers.clear()
        return local.apply(data)

    local = st.MemoryStore(propose=propose, clock=clock)
    local.update(creating(node("a")))
    got = local.view(lambda tx: st.get_node(tx, "a"))
    assert got is not None
    racers.append(batch_of((objects.StoreAction.UPDATE, got)))
    with pytest.raises(SequenceConflict, match="update out of sequence"):
        local.update(lambda tx: st.update_node(tx, got))
    assert local.version == 2


def service(service_id: str, name: str) -> objects.Service:
    svc = objects.Service(spec=objects.ServiceSpec(name=name))
    svc.meta.id = service_id
    return svc


def test_names_of_services_are_unique_even_when_two_creates_race(clock: Clock) -> None:
    racers: list[bytes] = []

    def propose(data: bytes) -> bytes:
        for racer in racers:  # another manager's create of the same name lands first
            local.apply(racer)
        racers.clear()
        return local.apply(data)

    local = st.MemoryStore(propose=propose, clock=clock)
    racer = objects.StoreAction(kind=objects.StoreAction.CREATE, service=service("s1", "Web"))
    racers.append(objects.StoreBatch(actions=[racer]).SerializeToString())
    with pytest.raises(AlreadyExists, match="service web already exists"):
        local.update(lambda tx: st.create_service(tx, service("s2", "web")))
    with pytest.raises(AlreadyExists, match="service WEB already exists"):  # the Tx's check
        local.update(lambda tx: st.create_service(tx, service("s3", "WEB")))
    # Within one batch: a second holder is refused; a rename frees the old name.
    both = [service("s4", "api"), service("s5", "api")]
    data = objects.StoreBatch(
        actions=[objects.StoreAction(kind=objects.StoreAction.CREATE, service=s) for s in both]
    ).SerializeToString()
    assert objects.ApplyResult.FromString(local.apply(data)).error_kind == "exists"
    renamed = local.view(lambda tx: st.get_service(tx, "s1"))
    assert renamed is not None
    renamed.spec.name = "front"
    local.update(lambda tx: st.update_service(tx, renamed))
    local.update(lambda tx: st.create_service(tx, service("s6", "web")))
    names = sorted(s.spec.name for s in local.view(lambda tx: st.find_services(tx)))
    assert names == ["front", "web"]


def test_exists_and_not_found(store: st.MemoryStore) -> None:
    store.update(lambda tx: st.create_node(tx, node("a")))
    with pytest.raises(AlreadyExists, match="node a already exists"):
        store.update(lambda tx: st.create_node(tx, node("a")))
    with pytest.raises(NotFound, match="node zz not found"):
        store.update(lambda tx: st.update_node(tx, node("zz")))
    with pytest.raises(NotFound, match="node zz not found"):
        store.update(lambda tx: st.delete_node(tx, "zz"))
    assert store.version == 1


def test_a_failing_action_makes_apply_refuse_the_whole_batch(store: st.MemoryStore) -> None:
    watch = store.watch()
    data = batch_of(
        (objects.StoreAction.CREATE, node("a")),
        (objects.StoreAction.CREATE, node("b")),
        (objects.StoreAction.REMOVE, node("missing")),
    )
    result = objects.ApplyResult.FromString(store.apply(data))
    assert (result.error_kind, result.error_message, result.version) == (
        "not_found",
        "node missing not found",
        0,
    )
    assert store.view(lambda tx: st.find_nodes(tx)) == []
    assert drain(watch) == []
    twice = batch_of(
        (objects.StoreAction.CREATE, node("a")), (objects.StoreAction.CREATE, node("a"))
    )
    assert objects.ApplyResult.FromString(store.apply(twice)).error_kind == "exists"


def test_an_action_without_object_is_invalid(store: st.MemoryStore) -> None:
    data = objects.StoreBatch(actions=[objects.StoreAction()]).SerializeToString()
    assert objects.ApplyResult.FromString(store.apply(data)).error_kind == "invalid"


def test_watch_sees_events_in_order_then_commit(store: st.MemoryStore) -> None:
    store.update(lambda tx: st.create_node(tx, node("a")))
    watch = store.watch()
    a = store.view(lambda tx: st.get_node(tx, "a"))
    assert a is not None
    a.spec.name = "x"

    def write(tx: st.Tx) -> None:
        st.create_node(tx, node("b"))
        st.update_node(tx, a)

    store.update(write)
    store.update(lambda tx: st.delete_node(tx, "b"))

    items = drain(watch)
    summary = [(i.kind, i.action, i.obj.meta.id) if isinstance(i, st.Event) else i for i in items]
    assert summary == [
        ("node", "create", "b"),
        ("node", "update", "a"),
        st.Commit(2),
        ("node", "remove", "b"),
        st.Commit(3),
    ]
    update = items[1]
    assert isinstance(update, st.Event) and isinstance(update.old, objects.Node)
    assert (update.old.spec.name, update.old.meta.version) == ("", 1)
    assert update.obj.meta.version == 2


def test_watch_by_kind_and_event_copies(store: st.MemoryStore) -> None:
    clusters = store.watch(kinds={"cluster"})
    nodes = store.watch(kinds={"node"})
    store.update(lambda tx: st.create_node(tx, node("a")))
    store.update(lambda tx: st.create_cluster(tx, cluster()))
    assert [type(i) for i in drain(clusters)] == [st.Event, st.Commit]
    first = drain(nodes)[0]
    assert isinstance(first, st.Event) and isinstance(first.obj, objects.Node)
    first.obj.description.hostname = "mutated"
    stored = store.view(lambda tx: st.get_node(tx, "a"))
    assert stored is not None and stored.description.hostname == "host-a"
    with pytest.raises(InvalidArgument, match="unknown kinds: volume"):
        store.watch(kinds={"volume"})


@pytest.mark.timeout(60)
def test_view_and_watch_has_no_gap(store: st.MemoryStore) -> None:
    started, stop = threading.Event(), threading.Event()

    def writer() -> None:
        # Keeps writing while the subscriptions are taken, and a few batches after.
        i = after = 0
        while after < 5:
            store.update(creating(node(f"n{i:06d}")))
            i += 1
            started.set()
            after += stop.is_set()

    thread = threading.Thread(target=writer)
    thread.start()
    assert started.wait(timeout=10)
    probe = store.watch(maxsize=10_000_000)
    subscriptions = []
    for _ in range(20):
        subscriptions.append(
            store.view_and_watch(
                lambda tx: (tx.version, ids(st.find_nodes(tx))), maxsize=10_000_000
            )
        )
        while not isinstance(probe.get(timeout=10), st.Commit):
            pass  # let at least one more batch land between subscriptions
    stop.set()
    thread.join()
    final = store.view(lambda tx: ids(st.find_nodes(tx)))
    assert len(final) == store.version
    for (version, seen), watch in subscriptions:
        assert len(seen) == version  # one create per batch
        events: list[str] = []
        for item in drain(watch):
            if isinstance(item, st.Event):
                events.append(item.obj.meta.id)
            else:
                assert item == st.Commit(version + 1)
                version += 1
        assert version == store.version
        assert sorted(seen + events) == final
        assert not set(seen) & set(events)
    assert len({version for (version, _), _ in subscriptions}) > 1


def test_overflow_closes_the_watch(store: st.MemoryStore) -> None:
    watch = store.watch(maxsize=3)
    other = store.watch()
    store.update(lambda tx: st.create_node(tx, node("a")))
    store.update(lambda tx: st.create_node(tx, node("b")))
    assert watch.overflowed and watch.closed
    with pytest.raises(st.WatchClosed, match="overflowed"):
        watch.get(timeout=0)
    assert list(watch) == []
    assert len(drain(other)) == 4
    other.close()
    assert other.closed and not other.overflowed


def test_snapshot_restore_round_trip(store: st.MemoryStore, clock: Clock) -> None:
    labelled = node("b")
    labelled.spec.labels.update({"zone": "a", "disk": "ssd", "arch": "x86"})
    store.update(creating(labelled, cluster()))
    store.update(lambda tx: st.create_node(tx, node("a")))
    data = store.snapshot()

    fresh = st.MemoryStore(clock=clock)
    fresh.update(lambda tx: st.create_node(tx, node("gone")))
    watch = fresh.watch()
    fresh.restore(data)
    assert fresh.snapshot() == data
    assert fresh.version == store.version == 2
    assert drain(watch) == [st.Reset(2)]
    assert ids(fresh.view(lambda tx: st.find_nodes(tx))) == ["a", "b"]
    fresh.update(lambda tx: st.delete_node(tx, "a"))
    assert fresh.version == 3


def test_two_replicas_through_a_propose_hook(clock: Clock) -> None:
    follower = st.MemoryStore(clock=clock)
    proposals: list[bytes] = []

    def propose(data: bytes) -> bytes:
        # Raft's order: every member applies; the proposer gets its own result.
        proposals.append(data)
        follower.apply(data)
        return leader.apply(data)

    leader = st.MemoryStore(propose=propose, clock=clock)
    leader.update(creating(node("a"), cluster()))
    a = leader.view(lambda tx: st.get_node(tx, "a"))
    assert a is not None
    a.spec.availability = objects.PAUSE
    leader.update(lambda tx: st.update_node(tx, a))
    with pytest.raises(SequenceConflict):
        follower.update(lambda tx: st.update_node(tx, a))  # follower applies locally
    with pytest.raises(NotFound):
        leader.update(lambda tx: st.delete_node(tx, "nope"))
    assert len(proposals) == 2
    assert leader.snapshot() == follower.snapshot()


def test_propose_errors_propagate_and_nothing_is_applied(clock: Clock) -> None:
    def propose(data: bytes) -> bytes:
        raise TimeoutError("no leader")

    local = st.MemoryStore(propose=propose, clock=clock)
    with pytest.raises(TimeoutError):
        local.update(creating(node("a")))
    assert local.version == 0
    assert local.view(lambda tx: st.find_nodes(tx)) == []


def test_batch_splits_into_proposals(clock: Clock) -> None:
    sizes: list[int] = []

    def propose(data: bytes) -> bytes:
        sizes.append(len(objects.StoreBatch.FromString(data).actions))
        return local.apply(data)

    def failing(tx: st.Tx) -> None:
        st.create_node(tx, node("rolled-back"))
        raise RuntimeError("callback failed")

    def fn(batch: st.Batch) -> int:
        for i in range(7):
            batch.update(creating(node(f"n{i}")))
        with pytest.raises(RuntimeError):
            batch.update(failing)
        return 7

    local = st.MemoryStore(propose=propose, clock=clock)
    assert local.batch(fn, max_actions=3) == 7
    assert sizes == [3, 3, 1]
    assert ids(local.view(lambda tx: st.find_nodes(tx))) == [f"n{i}" for i in range(7)]


def test_a_failing_batch_keeps_earlier_proposals(store: st.MemoryStore) -> None:
    store.update(lambda tx: st.create_node(tx, node("n2")))

    def fn(batch: st.Batch) -> None:
        for i in range(4):
            batch.update(creating(node(f"n{i}")))

    with pytest.raises(AlreadyExists):
        store.batch(fn, max_actions=2)
    assert ids(store.view(lambda tx: st.find_nodes(tx))) == ["n0", "n1", "n2"]


def test_resolve_node(store: st.MemoryStore) -> None:
    store.update(
        creating(
            node("abc123", "web"),
            node("abd456", "db"),
            node("xyz789", "dup"),
            node("xyz000", "dup"),
        )
    )

    def resolve(ref: str) -> str:
        return store.view(lambda tx: st.resolve_node(tx, ref)).meta.id

    assert resolve("abc123") == "abc123"
    assert resolve("web") == "abc123"
    assert resolve("abd") == "abd456"
    with pytest.raises(InvalidArgument, match=r"^node ab is ambiguous \(2 matches found\)$"):
        resolve("ab")
    with pytest.raises(InvalidArgument, match=r"^node dup is ambiguous \(2 matches found\)$"):
        resolve("dup")
    with pytest.raises(NotFound, match=r"^node nope not found$"):
        resolve("nope")
    with pytest.raises(NotFound):
        resolve("")


def test_misuse_is_refused(store: st.MemoryStore) -> None:
    with pytest.raises(RuntimeError, match="inside a view"):
        store.view(lambda tx: store.update(lambda inner: None))
    with pytest.raises(RuntimeError, match="inside another update"):
        store.batch(lambda batch: store.update(creating(node("a"))))
    escaped = store.view(lambda tx: tx)
    with pytest.raises(RuntimeError, match="outside"):
        st.find_nodes(escaped)
    with pytest.raises(InvalidArgument, match="node has no id"):
        store.update(lambda tx: st.create_node(tx, objects.Node()))


def test_tables_cover_every_kind_in_the_protos() -> None:
    oneof = objects.StoreAction.DESCRIPTOR.oneofs_by_name["target"]
    assert {f.name for f in oneof.fields} == {t.kind for t in st.TABLES}
    repeated = {f.name for f in objects.StoreSnapshot.DESCRIPTOR.fields} - {"version"}
    assert repeated == {t.plural for t in st.TABLES}


def test_update_retrying_re_reads_after_a_concurrent_write(store: st.MemoryStore) -> None:
    store.update(lambda tx: st.create_node(tx, objects.Node(meta=objects.Meta(id="n1"))))
    stale = store.view(lambda tx: st.get_node(tx, "n1"))
    assert stale is not None
    other = objects.Node()
    other.CopyFrom(stale)
    other.spec.labels["other"] = "write"
    store.update(lambda tx: st.update_node(tx, other))  # lands between read and write
    attempts: list[int] = []

    def mark(tx: st.Tx) -> None:
        node = stale if not attempts else st.get_node(tx, "n1")
        assert node is not None
        attempts.append(1)
        node.status.message = "marked"
        st.update_node(tx, node)

    store.update_retrying(mark)
    node = store.view(lambda tx: st.get_node(tx, "n1"))
    assert node is not None and len(attempts) == 2
    assert node.status.message == "marked" and node.spec.labels["other"] == "write"
    with pytest.raises(SequenceConflict):
        store.update_retrying(lambda tx: st.update_node(tx, stale), attempts=3)
