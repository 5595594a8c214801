"""`service ls`/`ps` rows, `inspect` documents and log prefixes (cli.commands.service_output)."""

from __future__ import annotations

import pytest

from api import objects_pb2 as opb
from api import swarm_pb2 as spb
from cli import output
from cli.client import CliError
from cli.commands import secret as secret_cmd
from cli.commands import service_output as so

pytestmark = pytest.mark.unit

NOW = 1_700_000_100.0
SVC_ID = "svc0000000000000000000001"


def service(**spec: object) -> opb.Service:
    return opb.Service(
        meta=opb.Meta(id=SVC_ID, version=12, created_at=NOW - 100, updated_at=NOW - 50),
        spec=opb.ServiceSpec(name="web", **spec),  # type: ignore[arg-type]
    )


def task(
    slot: int, task_id: str, *, created: float, state: int, desired: int, err: str = ""
) -> opb.Task:
    return opb.Task(
        meta=opb.Meta(id=task_id, created_at=created),
        service_id=SVC_ID,
        service_name="web",
        slot=slot,
        node_id="node1",
        spec=opb.TaskSpec(container=opb.ContainerSpec(image="nginx:1@sha256:" + "a" * 64)),
        desired_state=desired,  # type: ignore[arg-type]
        status=opb.TaskStatus(timestamp=NOW - 5, state=state, err=err),  # type: ignore[arg-type]
    )


def test_ls_row_replicated_with_ports_and_digest_stripped():
    svc = service(
        replicas=3,
        task=opb.TaskSpec(container=opb.ContainerSpec(image="nginx:1@sha256:" + "b" * 64)),
        endpoint=opb.EndpointSpec(
            ports=[opb.PortConfig(protocol="tcp", target_port=80, published_port=8080)]
        ),
    )
    row = so.ls_row(spb.ServiceInfo(service=svc, running=2, desired=3))
    assert row == {
        "ID": SVC_ID[:12],
        "Name": "web",
        "Mode": "replicated",
        "Replicas": "2/3",
        "Image": "nginx:1",
        "Ports": "*:8080->80/tcp",
    }


def test_ls_replicas_of_jobs_global_and_max_per_node():
    job = service(mode=opb.REPLICATED_JOB, replicas=3, max_concurrent=2)
    info = spb.ServiceInfo(service=job, running=1, desired=2, completed=2)
    assert so.ls_row(info)["Replicas"] == "1/2 (2/3 completed)"
    assert so.ls_row(info)["Mode"] == "replicated job"
    glob = spb.ServiceInfo(service=service(mode=opb.GLOBAL), running=3, desired=3)
    assert so.ls_row(glob)["Replicas"] == "3/3" and so.ls_row(glob)["Mode"] == "global"
    capped = service(replicas=4, task=opb.TaskSpec(placement=opb.Placement(max_replicas=1)))
    assert (
        so.ls_row(spb.ServiceInfo(service=capped, running=4, desired=4))["Replicas"]
        == "4/4 (max 1 per node)"
    )


def test_ls_filters():
    info = spb.ServiceInfo(service=service(labels={"tier": "web"}))
    assert so.ls_matches(info, [("name", "we"), ("label", "tier=web"), ("mode", "replicated")])
    assert not so.ls_matches(info, [("mode", "global")])
    assert so.ls_matches(info, [("id", "svc"), ("id", "zzz")])


def test_ps_rows_history_and_truncated_errors():
    tasks = [
        task(
            1,
            "t1old00000000000000000000",
            created=NOW - 60,
            state=opb.TASK_FAILED,
            desired=opb.TASK_SHUTDOWN,
            err="no suitable node (insufficient resources on 2 nodes)",
        ),
        task(
            2,
            "t2000000000000000000000000",
            created=NOW - 30,
            state=opb.TASK_PENDING,
            desired=opb.TASK_RUNNING,
        ),
        task(
            1,
            "t1new00000000000000000000",
            created=NOW - 10,
            state=opb.TASK_RUNNING,
            desired=opb.TASK_RUNNING,
        ),
    ]
    rows = so.ps_rows(tasks, {"node1": "w1"}, now=NOW)
    assert [r["Name"] for r in rows] == ["web.1", " \\_ web.1", "web.2"]
    assert rows[0]["ID"] == "t1new0000000" and rows[0]["Image"] == "nginx:1"
    assert rows[0]["Node"] == "w1" and rows[0]["DesiredState"] == "Running"
    assert rows[0]["CurrentState"] == "Running 5 seconds ago"
    assert rows[1]["Error"] == '"no suitable node (insufficien…"'
    assert rows[1]["DesiredState"] == "Shutdown" and rows[1]["CurrentState"].startswith("Failed ")
    full = so.ps_rows(tasks, {}, now=NOW, no_trunc=True)
    assert full[1]["Error"] == '"no suitable node (insufficient resources on 2 nodes)"'
    assert full[0]["ID"] == "t1new00000000000000000000" and "@sha256:" in full[0]["Image"]
    assert full[0]["Node"] == "node1"
    table = output.table(so.PS_HEADERS, so.ps_cells(rows)).splitlines()
    assert table[0].startswith("ID ") and table[2].split()[1:3] == ["\\_", "web.1"]


def test_inspect_document_has_dockers_shape():
    svc = service(
        replicas=2,
        labels={"a": "b"},
        task=opb.TaskSpec(
            container=opb.ContainerSpec(
                image="nginx", args=["serve"], env=["A=1"], stop_grace_period=30.0
            ),
            restart=opb.RestartPolicy(condition=opb.RESTART_ON_FAILURE),
            placement=opb.Placement(
                constraints=["node.role==worker"], preferences=["node.labels.z"]
            ),
        ),
        update=opb.UpdateConfig(parallelism=2, monitor=10.0, failure_action=opb.FAILURE_ROLLBACK),
    )
    svc.update_status.state = opb.UpdateStatus.PAUSED
    svc.update_status.message = "update paused"
    doc = so.service_doc(svc)
    assert doc["ID"] == SVC_ID and doc["Version"] == {"Index": 12}
    assert doc["CreatedAt"].endswith("Z")
    spec = doc["Spec"]
    assert spec["Name"] == "web" and spec["Labels"] == {"a": "b"}
    assert spec["Mode"] == {"Replicated": {"Replicas": 2}}
    cs = spec["TaskTemplate"]["ContainerSpec"]
    assert cs == {
        "Image": "nginx",
        "Args": ["serve"],
        "Env": ["A=1"],
        "StopGracePeriod": 30_000_000_000,
        "Isolation": "default",
    }
    assert spec["TaskTemplate"]["RestartPolicy"] == {
        "Condition": "on-failure",
        "Delay": 5_000_000_000,
        "MaxAttempts": 0,
    }
    assert spec["TaskTemplate"]["Placement"] == {
        "Constraints": ["node.role==worker"],
        "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.z"}}],
    }
    assert spec["UpdateConfig"] == {
        "Parallelism": 2, "FailureAction": "rollback", "Monitor": 10_000_000_000,
        "MaxFailureRatio": 0.0, "Order": "stop-first",
    }  # fmt: skip
    assert spec["RollbackConfig"]["Parallelism"] == 1
    assert spec["EndpointSpec"] == {"Mode": "vip"}
    assert doc["UpdateStatus"]["State"] == "paused" and "PreviousSpec" not in doc
    assert so.mode_doc(opb.ServiceSpec(mode=opb.GLOBAL)) == {"Global": {}}
    assert so.mode_doc(opb.ServiceSpec(mode=opb.REPLICATED_JOB, replicas=5, max_concurrent=2)) == {
        "ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 5}
    }


def test_pretty_text():
    svc = service(
        replicas=2, task=opb.TaskSpec(container=opb.ContainerSpec(image="nginx", args=["a", "b"]))
    )
    text = so.pretty_text(svc)
    assert text.startswith(
        f"ID:\t\t{SVC_ID}\nName:\t\tweb\nService Mode:\tReplicated\n Replicas:\t2\n"
    )
    assert "UpdateConfig:\n Parallelism:\t1\n On failure:\tpause\n Monitoring Period: 5s\n" in text
    assert "ContainerSpec:\n Image:\t\tnginx\n Args:\t\ta b \n" in text
    assert "Endpoint Mode:\tvip" in text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (5, "5s"), (90, "1m30s"), (3600, "1h0m0s"), (0.5, "500ms"), (1.5, "1.5s")],
)
def test_go_duration(seconds, text):
    assert so.go_duration(seconds) == text


def test_log_prefix():
    t = task(
        1, "abc123def456789000000000", created=NOW, state=opb.TASK_RUNNING, desired=opb.TASK_RUNNING
    )
    msg = spb.LogMessage(task_id=t.meta.id, node_id="node1", timestamp=NOW, data=b"hello\n")
    hosts = {"node1": "w1"}
    assert so.log_prefix(msg, t, hosts) == "web.1.abc123def456@w1    | "
    assert so.log_prefix(msg, t, hosts, task_ids=False) == "web.1@w1    | "
    assert so.log_prefix(msg, t, hosts, trunc=False) == f"web.1.{t.meta.id}@w1    | "
    assert so.log_prefix(msg, t, hosts, raw=True) == ""
    stamped = so.log_prefix(msg, t, hosts, timestamps=True)
    assert stamped.startswith("2023-11-14T22:15:00.000000000Z web.1.")


def test_secret_and_config_documents():
    meta = opb.Meta(id="sec1", version=3, created_at=NOW, updated_at=NOW)
    secret = opb.Secret(meta=meta, spec=opb.SecretSpec(name="pw", labels={"k": "v"}))
    assert secret_cmd.doc(secret, secret_cmd.SECRET) == {
        "ID": "sec1",
        "Version": {"Index": 3},
        "CreatedAt": "2023-11-14T22:15:00Z",
        "UpdatedAt": "2023-11-14T22:15:00Z",
        "Spec": {"Name": "pw", "Labels": {"k": "v"}},
    }
    config = opb.Config(meta=meta, spec=opb.SecretSpec(name="conf", data=b"hi"))
    assert secret_cmd.doc(config, secret_cmd.CONFIG)["Spec"]["Data"] == "aGk="
    row = secret_cmd.row(secret, now=NOW + 3)
    assert (row["Name"], row["CreatedAt"]) == ("pw", "3 seconds ago")
    assert "Data:\nhi" in secret_cmd.pretty_text(config, secret_cmd.CONFIG)


def test_secret_too_large(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * (500 * 1024 + 1))
    with pytest.raises(CliError, match=r"secret too large: 512001 bytes \(max 500 KB\)"):
        secret_cmd.read_data(str(big), secret_cmd.SECRET)
    assert secret_cmd.read_data(str(big), secret_cmd.CONFIG) == b"x" * (500 * 1024 + 1)


def test_ps_orders_a_slot_newest_first_whichever_node_ran_each_task():
    old = task(1, "old", created=NOW - 60, state=opb.TASK_SHUTDOWN, desired=opb.TASK_SHUTDOWN)
    new = task(1, "new", created=NOW - 10, state=opb.TASK_RUNNING, desired=opb.TASK_RUNNING)
    old.node_id, new.node_id = "zzz-node", "aaa-node"  # node order would put old first
    rows = so.ps_rows([old, new], {}, now=NOW)
    assert [r["Name"] for r in rows] == ["web.1", " \\_ web.1"]
    assert rows[0]["ID"] == "new"
