"""Tasks on a real engine (crun): the Worker driving the container controller.

The engine runs in this test process under a data root in tmp_path, with tasks on
`--network none` (a network driver that refuses anything else), so nothing touches
the machine's own network. Teardown removes every container, then checks that no
mount under the data root is left.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from agent import hostprep
from agent.containers import cgroups
from agent.engine import Engine, EngineOptions
from agent.swarm.container import EngineExecutor
from agent.swarm.lifecycle import UNHEALTHY
from agent.swarm.worker import Runner, Worker
from api import engine_pb2
from api import objects_pb2 as objects
from api.tasks import LABEL_SERVICE_NAME, LABEL_TASK_ID
from tests.daemons import wait_for

pytestmark = pytest.mark.integration

TIMEOUT = 30.0


class NoNetwork:
    """Tasks here use `none`, which the engine handles without a driver."""

    def attach(self, container_id: str, *, mode: str, ports: Sequence[object]) -> object:
        raise AssertionError(f"unexpected network mode {mode}")

    def detach(self, container_id: str) -> None:
        pass

    def restore(self, live: Sequence[str]) -> None:
        pass


class Recorder:
    def __init__(self) -> None:
        self.latest: dict[str, objects.TaskStatus] = {}
        self.cond = threading.Condition()

    def __call__(self, batch: list[tuple[str, objects.TaskStatus]]) -> None:
        with self.cond:
            self.latest.update(batch)
            self.cond.notify_all()

    def state_is(self, task_id: str, state: int) -> objects.TaskStatus:
        def reached() -> bool:
            return task_id in self.latest and self.latest[task_id].state == state

        with self.cond:
            ok = self.cond.wait_for(reached, timeout=TIMEOUT)
            assert ok, f"{task_id}: wanted {state}, have {self.latest.get(task_id)}"
            return self.latest[task_id]


@pytest.fixture
def engine(tmp_path: Path, busybox_tar: Path) -> Iterator[Engine]:
    hostprep.prepare_host()
    data_root = tmp_path / "data"
    parent = f"/pyswarm-it-{secrets.token_hex(4)}"
    options = EngineOptions(data_root=data_root, cgroup_parent=parent, default_registry="")
    eng = Engine(options, network=NoNetwork())  # type: ignore[arg-type]
    eng.start()
    with open(busybox_tar, "rb") as f:
        eng.images.import_rootfs(f, "busybox:latest", changes=['CMD ["sh"]'])
    yield eng
    for record in eng.containers.records(all=True):
        eng.containers.remove(record.id, force=True, volumes=True)
    eng.close()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(data_root) not in mounts, "mounts left under the data root"
    with contextlib.suppress(ValueError, OSError):
        cgroups.remove_parent_if_empty(parent)


@pytest.fixture
def node(engine: Engine) -> Iterator[tuple[Worker, Recorder]]:
    rec = Recorder()
    runner = Runner(threads=8)
    worker = Worker(
        EngineExecutor(engine, network="none"), report=rec, runner=runner, flush_interval=0.02
    )
    yield worker, rec
    worker.stop()
    runner.stop()


def make_task(tid: str, *cmd: str, image: str = "busybox", grace: float = 1.0) -> objects.Task:
    t = objects.Task(service_name="web", service_id="svc1", slot=1, node_id="node1")
    t.meta.id = tid
    t.desired_state = objects.TASK_RUNNING
    t.status.state = objects.TASK_ASSIGNED
    t.spec.container.image = image
    t.spec.container.command[:] = list(cmd)
    t.spec.container.stop_grace_period = grace
    return t


def run_in(engine: Engine, cid: str, *cmd: str) -> str:
    proc = engine.containers.exec(engine_pb2.ExecRequest(id=cid, cmd=list(cmd)))
    out, _ = proc.communicate(timeout=10)
    return out.decode()


def container(engine: Engine, task_id: str) -> Callable[[], str | None]:
    def find() -> str | None:
        for r in engine.containers.records(all=True):
            if r.config.get("labels", {}).get(LABEL_TASK_ID) == task_id:
                return r.id
        return None

    return find


def test_task_runs_then_shuts_down_within_its_grace_period(engine, node):
    worker, rec = node
    task = make_task("task1", "sleep", "30", grace=1.0)
    worker.assign([task], full=True)
    rec.state_is("task1", objects.TASK_RUNNING)
    record = engine.containers.get(container(engine, "task1")() or "")
    assert record.name == "web.1.task1"
    labels = record.config["labels"]
    assert labels[LABEL_TASK_ID] == "task1" and labels[LABEL_SERVICE_NAME] == "web"

    task.desired_state = objects.TASK_SHUTDOWN
    began = time.monotonic()
    worker.assign([task], full=False)
    rec.state_is("task1", objects.TASK_SHUTDOWN)
    # sleep as PID 1 ignores SIGTERM: killed when the 1 s grace period ends.
    assert 0.9 < time.monotonic() - began < 10
    assert engine.containers.get(record.id).state == "exited"
    worker.assign([], full=True)
    wait_for(lambda: container(engine, "task1")() is None, timeout=TIMEOUT, what="removal")


def test_secret_is_mounted_read_only_and_gone_after_removal(engine, node):
    worker, rec = node
    secret = objects.Secret(spec=objects.SecretSpec(name="db_pass", data=b"hunter2"))
    secret.meta.id = "sec1"
    task = make_task("task2", "sleep", "30")
    task.spec.container.secrets.add(id="sec1", name="db_pass")
    worker.assign([task], full=True, secrets=[secret])
    rec.state_is("task2", objects.TASK_RUNNING)
    cid = container(engine, "task2")() or ""
    assert run_in(engine, cid, "cat", "/run/secrets/db_pass") == "hunter2"
    assert run_in(engine, cid, "stat", "-c", "%a", "/run/secrets/db_pass").strip() == "444"
    files_dir = engine.options.data_root / "swarm" / "files" / "task2"
    assert str(files_dir) in Path("/proc/mounts").read_text()

    worker.assign([], full=False, removed=["task2"])
    wait_for(lambda: container(engine, "task2")() is None, timeout=TIMEOUT, what="removal")
    wait_for(lambda: not files_dir.exists(), timeout=TIMEOUT, what="files removed")
    assert str(files_dir) not in Path("/proc/mounts").read_text()


def test_failing_command_fails_the_task_with_its_exit_code(engine, node):
    worker, rec = node
    worker.assign([make_task("task3", "sh", "-c", "exit 3")], full=True)
    status = rec.state_is("task3", objects.TASK_FAILED)
    assert (status.err, status.container.exit_code) == ("task: non-zero exit (3)", 3)


def test_health_checks_gate_running_and_fail_unhealthy_tasks(engine, node):
    worker, rec = node
    good = make_task("task4", "sleep", "30")
    good.spec.container.healthcheck.test[:] = ["CMD", "true"]
    good.spec.container.healthcheck.interval = 0.2
    bad = make_task("task5", "sleep", "30")
    bad.spec.container.healthcheck.test[:] = ["CMD-SHELL", "exit 1"]
    bad.spec.container.healthcheck.interval = 0.2
    bad.spec.container.healthcheck.retries = 2
    worker.assign([good, bad], full=True)
    assert rec.state_is("task4", objects.TASK_RUNNING).healthy
    status = rec.state_is("task5", objects.TASK_FAILED)
    assert status.err == UNHEALTHY and not status.healthy
    cid = container(engine, "task5")() or ""
    wait_for(lambda: engine.containers.get(cid).state == "exited", timeout=TIMEOUT, what="stopped")


def test_unknown_image_is_rejected(engine, node):
    worker, rec = node
    worker.assign([make_task("task6", "true", image="nope:1")], full=True)
    status = rec.state_is("task6", objects.TASK_REJECTED)
    assert status.err == "No such image: nope:1"
