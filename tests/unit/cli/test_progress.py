"""The convergence display (cli.progress) fed with synthetic services and tasks and a
fake clock: no daemon, no sleeping."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import pytest

from api import objects_pb2 as opb
from cli import progress
from cli.progress import Display, Renderer, Snapshot

pytestmark = pytest.mark.unit

SVC = "svc0000000000000000000001"
FULL = "[" + "=" * 50 + ">]"


def service(*, replicas: int = 3, mode: int = opb.REPLICATED, image: str = "nginx", state: int = 0,
            message: str = "", iteration: int = 0) -> opb.Service:  # fmt: skip
    svc = opb.Service(
        meta=opb.Meta(id=SVC),
        spec=opb.ServiceSpec(
            name="web",
            replicas=replicas,
            mode=mode,  # type: ignore[arg-type]
            task=opb.TaskSpec(container=opb.ContainerSpec(image=image)),
        ),
        job_iteration=iteration,
    )
    svc.update_status.state = state  # type: ignore[assignment]
    svc.update_status.message = message
    return svc


def task(slot: int, state: int, *, image: str = "nginx", node: str = "", desired: int = opb.TASK_RUNNING,
         created: float = 0.0, err: str = "", iteration: int = 0) -> opb.Task:  # fmt: skip
    return opb.Task(
        meta=opb.Meta(id=f"t{slot}{node}{created}", created_at=created),
        service_id=SVC, service_name="web", slot=slot, node_id=node,
        spec=opb.TaskSpec(container=opb.ContainerSpec(image=image + "@sha256:" + "a" * 64)),
        desired_state=desired,  # type: ignore[arg-type]
        status=opb.TaskStatus(state=state, err=err),  # type: ignore[arg-type]
        job_iteration=iteration,
    )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def script(snaps: Sequence[Snapshot]) -> Callable[[], Snapshot]:
    """A fetch that plays `snaps` and then repeats the last one."""
    it = iter(snaps)
    last: list[Snapshot] = []

    def fetch() -> Snapshot:
        snap = next(it, None)
        if snap is not None:
            last[:] = [snap]
        return last[0]

    return fetch


def run(snaps: Sequence[Snapshot], *, verify: float = 5.0, tty: bool = False, rollback: bool = False,
        stale: opb.UpdateStatus | None = None) -> tuple[progress.Result, str, Clock]:  # fmt: skip
    out, clock = io.StringIO(), Clock()
    result = progress.watch(
        script(snaps), Display(out, tty=tty), verify=verify, rollback=rollback, stale=stale,
        clock=clock, sleep=clock.sleep,
    )  # fmt: skip
    return result, out.getvalue(), clock


def test_bars_follow_dockers_states():
    assert progress.bar("running") == FULL
    assert progress.bar("preparing") == "[" + "=" * 33 + ">" + " " * 17 + "]"
    assert progress.bar("new") == "[" + "=" * 5 + ">" + " " * 45 + "]"


def test_renderer_lines_of_a_converging_replicated_service():
    r = Renderer()
    done = r.update(
        Snapshot(
            service(),
            [task(1, opb.TASK_RUNNING), task(2, opb.TASK_PREPARING), task(3, opb.TASK_PENDING)],
        )
    )
    assert not done
    lines = [progress._fmt(line) for line in r.frame()]
    assert lines == [
        "overall progress: 1 out of 3 tasks",
        f"1/3: running   {FULL}",
        "2/3: preparing [" + "=" * 33 + ">" + " " * 17 + "]",
        "3/3: pending   [" + "=" * 16 + ">" + " " * 34 + "]",
    ]


def test_a_converging_service_piped_prints_changed_lines_only():
    starting = Snapshot(
        service(),
        [task(1, opb.TASK_RUNNING), task(2, opb.TASK_STARTING), task(3, opb.TASK_ASSIGNED)],
    )
    running = Snapshot(service(), [task(s, opb.TASK_RUNNING) for s in (1, 2, 3)])
    result, out, clock = run([starting, starting, running])
    assert result == progress.Result(True)
    assert out.splitlines() == [
        "overall progress: 1 out of 3 tasks",
        "1/3: running",
        "2/3: starting",
        "3/3: assigned",
        "overall progress: 3 out of 3 tasks",
        "2/3: running",
        "3/3: running",
        "verify: Waiting 5 seconds to verify that tasks are stable...",
        "verify: Service converged",
    ]
    assert 5.0 <= clock.now < 6.0


def test_terminal_output_redraws_in_place_with_a_countdown():
    running = Snapshot(service(replicas=1), [task(1, opb.TASK_RUNNING)])
    result, out, _ = run([running], verify=2.0, tty=True)
    assert result.converged
    assert "\x1b[2Kverify: Waiting 2 seconds to verify that tasks are stable...\n" in out
    assert "\x1b[2Kverify: Waiting 1 seconds to verify that tasks are stable...\n" in out
    assert "\x1b[3A" in out  # back over the three lines drawn
    assert out.endswith(
        f"\x1b[2Koverall progress: 1 out of 1 tasks\n\x1b[2K1/1: running   {FULL}\n\x1b[2Kverify: Service converged\n"
    )


def test_a_task_that_fails_during_verify_restarts_the_wait():
    ok = Snapshot(service(replicas=1), [task(1, opb.TASK_RUNNING)])
    failed = Snapshot(service(replicas=1), [task(1, opb.TASK_FAILED, desired=opb.TASK_SHUTDOWN, err="exit 1"),
                                            task(1, opb.TASK_PREPARING, created=1.0)])  # fmt: skip
    result, out, clock = run([ok, ok, failed, ok], verify=1.0)
    assert result.converged
    assert "1/1: preparing" in out and clock.now > 1.4


def test_old_spec_tasks_do_not_count_and_an_update_in_progress_is_not_converged():
    snap = Snapshot(
        service(image="nginx:2", state=opb.UpdateStatus.UPDATING),
        [task(1, opb.TASK_RUNNING), task(2, opb.TASK_RUNNING, image="nginx:2")],
    )
    r = Renderer()
    assert not r.update(Snapshot(service(replicas=2, image="nginx:2"), snap.tasks))
    assert r.lines["overall progress"] == "1 out of 2 tasks"


def test_global_service_one_line_per_node():
    nodes = [
        opb.Node(meta=opb.Meta(id=n)) for n in ("nodeaaaaaaaaaaaaaaaa", "nodebbbbbbbbbbbbbbbb")
    ]
    tasks = [task(0, opb.TASK_RUNNING, node="nodeaaaaaaaaaaaaaaaa"), task(0, opb.TASK_STARTING, node="nodebbbbbbbbbbbbbbbb"),
             task(0, opb.TASK_RUNNING, node="drainedccccccccccccc")]  # fmt: skip
    svc = service(mode=opb.GLOBAL, replicas=0)
    r = Renderer()
    assert not r.update(Snapshot(svc, tasks, nodes))
    assert [progress._fmt(line) for line in r.frame()] == [
        "overall progress: 1 out of 2 tasks",
        f"nodeaaaaaaaa: running   {FULL}",
        "nodebbbbbbbb: starting  [" + "=" * 44 + ">" + " " * 6 + "]",
    ]
    result, out, _ = run(
        [Snapshot(svc, [task(0, opb.TASK_RUNNING, node=n.meta.id) for n in nodes], nodes)]
    )
    assert result.converged and "overall progress: 2 out of 2 tasks" in out


def test_replicated_job_progress():
    svc = service(mode=opb.REPLICATED_JOB, replicas=3, iteration=1)
    svc.spec.max_concurrent = 2
    tasks = [task(1, opb.TASK_COMPLETE, iteration=1), task(2, opb.TASK_RUNNING, iteration=1),
             task(3, opb.TASK_COMPLETE, iteration=0)]  # fmt: skip
    r = Renderer()
    assert not r.update(Snapshot(svc, tasks))
    assert r.lines["job progress"] == "1 out of 3 complete"
    assert r.lines["active tasks"] == "1 out of 2 tasks"
    done = [task(s, opb.TASK_COMPLETE, iteration=1) for s in (1, 2, 3)]
    result, out, clock = run([Snapshot(svc, tasks), Snapshot(svc, done)])
    assert result.converged and "job progress: 3 out of 3 complete" in out and clock.now < 1


def test_a_paused_update_fails_with_its_message():
    message = "update paused due to failure or early termination of task t1"
    paused = Snapshot(service(image="nginx:2", state=opb.UpdateStatus.PAUSED, message=message),
                      [task(1, opb.TASK_FAILED, desired=opb.TASK_SHUTDOWN, image="nginx:2", err="exit 1")])  # fmt: skip
    updating = Snapshot(
        service(image="nginx:2", state=opb.UpdateStatus.UPDATING), [task(1, opb.TASK_RUNNING)]
    )
    result, out, _ = run([updating, paused])
    assert result == progress.Result(False, f"Error: service update paused: {message}")
    assert "1/3: exit 1" in out


def test_an_automatic_rollback_reports_and_fails():
    message = "update rolled back due to failure or early termination of task t1"
    rolling = Snapshot(
        service(state=opb.UpdateStatus.ROLLBACK_STARTED, message=message),
        [task(1, opb.TASK_STARTING)],
    )
    back = Snapshot(service(state=opb.UpdateStatus.ROLLBACK_COMPLETED, message=message),
                    [task(s, opb.TASK_RUNNING) for s in (1, 2, 3)])  # fmt: skip
    result, out, _ = run([rolling, back])
    assert result == progress.Result(False, f"Error: service rolled back: {message}")
    assert out.splitlines()[0] == f"rollback: {message}"
    assert "overall progress: rolling back update: 0 out of 3 tasks" in out


def test_a_requested_rollback_that_completes_succeeds():
    rolling = Snapshot(
        service(state=opb.UpdateStatus.ROLLBACK_STARTED, message="manually requested rollback"),
        [task(1, opb.TASK_STARTING)],
    )
    back = Snapshot(service(state=opb.UpdateStatus.ROLLBACK_COMPLETED, message="rollback completed"),
                    [task(s, opb.TASK_RUNNING) for s in (1, 2, 3)])  # fmt: skip
    result, out, _ = run([rolling, back], rollback=True)
    assert result.converged
    assert out.splitlines()[0] == "rollback: manually requested rollback"
    assert out.splitlines()[-1] == "verify: Service converged"


def test_a_stale_paused_status_is_ignored_until_replaced():
    old = service(state=opb.UpdateStatus.PAUSED, message="old failure")
    snap = Snapshot(old, [task(s, opb.TASK_RUNNING) for s in (1, 2, 3)])
    result, _, _ = run([snap], stale=old.update_status)
    assert result.converged


def test_interrupt_leaves_the_service_as_is():
    def fetch() -> Snapshot:
        raise KeyboardInterrupt

    result = progress.watch(fetch, Display(io.StringIO(), tty=False), verify=1.0)
    assert result.interrupted and not result.converged
    assert "pyswarm service ps --no-trunc web" in progress.interrupted_hint("web")


def test_verify_period():
    svc = service()
    assert progress.verify_period(svc, created=False) == 5.0
    svc.spec.update.monitor = 30.0
    assert progress.verify_period(svc, created=False) == 30.0
    assert progress.verify_period(svc, created=True) == 5.0


def test_errors_are_truncated_like_dockers():
    assert progress.trunc_error("a\nb") == "a b"
    assert len(progress.trunc_error("x" * 200)) == 75


def test_after_a_scale_down_the_remaining_slots_need_not_be_1_to_n() -> None:
    # 9 → 3: the tasks left are in slots 1, 2 and 6; 3, 4 and 5 only hold shut-down tasks.
    shut = [task(s, opb.TASK_SHUTDOWN, desired=opb.TASK_SHUTDOWN) for s in (3, 4, 5)]
    live = [task(s, opb.TASK_RUNNING) for s in (1, 2, 6)]
    renderer = Renderer()
    assert renderer.update(Snapshot(service=service(replicas=3), tasks=[*shut, *live]))
    assert renderer.lines["overall progress"] == "3 out of 3 tasks"
    assert [k for k in renderer.lines if "/" in k] == ["1/3", "2/3", "3/3"]
