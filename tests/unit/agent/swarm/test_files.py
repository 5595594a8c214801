"""Secret and config paths, and the container a task asks the engine for."""

from __future__ import annotations

import pytest

from agent.swarm import files
from agent.swarm.container import container_config
from agent.swarm.exec import RejectedError
from api import objects_pb2 as objects
from api.tasks import LABEL_TASK_ID

pytestmark = pytest.mark.unit


def make_task() -> objects.Task:
    t = objects.Task(service_name="web", service_id="s1", slot=2, node_id="n1")
    t.meta.id = "t1"
    return t


def test_secret_and_config_targets():
    t = make_task()
    c = t.spec.container
    c.secrets.add(id="s1", name="db_pass")
    c.secrets.add(id="s1", name="db_pass", target="other", mode=0o400, uid=5)
    c.configs.add(id="c1", name="nginx.conf")
    c.configs.add(id="c1", name="nginx.conf", target="/etc/nginx/nginx.conf")
    planned = files.plan(t)
    assert [(f.kind, f.filename, f.target, f.mode) for f in planned] == [
        ("secret", "secret-0", "/run/secrets/db_pass", 0o444),
        ("secret", "secret-1", "/run/secrets/other", 0o400),
        ("config", "config-0", "/nginx.conf", 0o444),
        ("config", "config-1", "/etc/nginx/nginx.conf", 0o444),
    ]


@pytest.mark.parametrize("target", ["../etc/passwd", "/run/secrets", "a/../../b"])
def test_targets_that_escape_are_rejected(target):
    t = make_task()
    t.spec.container.secrets.add(id="s1", name="x", target=target)
    with pytest.raises(RejectedError):
        files.plan(t)


def test_files_live_under_the_data_root(tmp_path):
    root = files.files_root(tmp_path)
    assert files.TaskFiles(root, "t1").dir == tmp_path / "swarm" / "files" / "t1"


def test_container_config():
    t = make_task()
    c = t.spec.container
    c.image = "busybox"
    c.command[:] = ["sleep"]
    c.args[:] = ["30"]
    c.hostname = "{{.Service.Name}}-{{.Task.Slot}}"
    c.labels["mine"] = "1"
    c.labels[LABEL_TASK_ID] = "forged"
    c.stop_grace_period = 1.5
    c.mounts.add(type="tmpfs", target="/scratch", tmpfs_size=1 << 20)
    t.spec.resources.limits.memory_bytes = 64 << 20
    t.spec.resources.limits.pids = 50
    secret = files.PlannedFile("secret", objects.FileReference(), "secret-0", "/run/secrets/x")
    cfg = container_config(t, network="none", extra_mounts=[])
    assert cfg.name == "web.2.t1"
    assert (list(cfg.entrypoint), cfg.entrypoint_set, list(cfg.cmd)) == (["sleep"], True, ["30"])
    assert cfg.hostname == "web-2"
    assert cfg.labels["mine"] == "1" and cfg.labels[LABEL_TASK_ID] == "t1"
    assert cfg.stop_timeout == 2 and cfg.restart.name == "no" and cfg.network == "none"
    assert (cfg.resources.memory_bytes, cfg.resources.pids_limit) == (64 << 20, 50)
    assert [(m.type, m.target) for m in cfg.mounts] == [("tmpfs", "/scratch")]
    assert secret.mode == 0o444
