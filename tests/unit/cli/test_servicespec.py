"""`service create`/`update` flags -> ServiceSpec (cli.servicespec), and the commands'
flag errors, without a daemon."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

import cli.main
from api import objects_pb2 as opb
from cli import servicespec as ss
from cli.commands import service as service_cmd
from cli.commands import service_flags as sf

pytestmark = pytest.mark.unit

CREATE_PARAMS = {p.name for p in service_cmd.create.params}


def resolve(kind: str, name: str) -> tuple[str, str]:
    if name == "missing":
        raise ValueError(f"{kind} not found: {name}")
    return f"{kind}-id-{name}", name


def parse_flags(command: Any, *args: str) -> tuple[dict[str, Any], list[str]]:
    """click's parsed values of `args` for `command` (create or update)."""
    ctx = command.make_context(command.name, list(args))
    params = dict(ctx.params)
    rest = list(params.pop("args")) if command is service_cmd.create else []
    return params, rest


def create(*args: str) -> opb.ServiceSpec:
    flags, rest = parse_flags(service_cmd.create, *args)
    image = flags.pop("image")
    return ss.build_spec(image, rest, flags, resolve)


def update(spec: opb.ServiceSpec, *args: str) -> opb.ServiceSpec:
    flags, _ = parse_flags(service_cmd.update, *args, "web")
    return ss.merge_update(spec, flags, resolve)


def test_defaults_of_a_replicated_service():
    spec = create("--name", "web", "busybox", "sleep", "1d")
    assert spec.name == "web" and spec.mode == opb.REPLICATED and spec.replicas == 1
    assert spec.task.container.image == "busybox"
    assert list(spec.task.container.args) == ["sleep", "1d"]
    assert not spec.task.container.command_set
    assert not spec.update.HasField("parallelism") and not spec.update.HasField("monitor")
    assert not spec.task.restart.HasField("delay")


def test_options_after_the_image_belong_to_the_command():
    spec = create("busybox", "ls", "-l", "--replicas", "3")
    assert list(spec.task.container.args) == ["ls", "-l", "--replicas", "3"]
    assert spec.replicas == 1


def test_every_flag_is_encoded(tmp_path, monkeypatch):
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nA=from-file\nB=2\n")
    monkeypatch.setenv("FROM_CLIENT", "yes")
    spec = create(
        "--name", "web", "--replicas", "3", "--replicas-max-per-node", "2",
        "-e", "A=1", "-e", "FROM_CLIENT", "-e", "UNSET_VAR_X", "--env-file", str(env_file),
        "--mount", "type=bind,source=/srv,target=/data,readonly",
        "--mount", "type=tmpfs,target=/tmp,tmpfs-size=64m",
        "--constraint", "node.role==worker", "--constraint", " node.labels.zone!=a ",
        "--placement-pref", "spread=node.labels.zone",
        "--reserve-cpu", "0.5", "--reserve-memory", "64m",
        "--limit-cpu", "1.5", "--limit-memory", "1g", "--limit-pids", "100",
        "--restart-condition", "on-failure", "--restart-delay", "1m30s",
        "--restart-max-attempts", "4", "--restart-window", "2h",
        "--update-parallelism", "2", "--update-delay", "10s", "--update-failure-action",
        "rollback", "--update-monitor", "30s", "--update-max-failure-ratio", "0.25",
        "--update-order", "start-first",
        "--rollback-parallelism", "0", "--rollback-failure-action", "continue",
        "--rollback-monitor", "1s", "--rollback-order", "stop-first",
        "--health-cmd", "wget -q localhost", "--health-interval", "5s", "--health-timeout",
        "2s", "--health-retries", "4", "--health-start-period", "1s",
        "--secret", "db_pass", "--secret", "source=tls,target=cert.pem,uid=1,gid=2,mode=0400",
        "--config", "nginx_conf", "--config", "src=app,target=/etc/app.ini",
        "--hostname", "{{.Service.Name}}-{{.Task.Slot}}", "-l", "tier=web",
        "--container-label", "c=1", "--stop-grace-period", "30s", "--stop-signal", "TERM",
        "-u", "nobody", "-w", "/srv", "--entrypoint", "/bin/sh -c", "--read-only",
        "--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN",
        "--network", "front", "--network", "name=back,alias=api,alias=api2",
        "-p", "8080:80", "-p", "published=53,target=53,protocol=udp,mode=host",
        "--endpoint-mode", "dnsrr",
        "nginx:1.25", "echo", "hi",
    )  # fmt: skip
    c, task = spec.task.container, spec.task
    assert spec.replicas == 3 and task.placement.max_replicas == 2
    assert list(c.env) == ["A=from-file", "B=2", "A=1", "FROM_CLIENT=yes"]
    assert [(m.type, m.source, m.target, m.read_only) for m in c.mounts] == [
        ("bind", "/srv", "/data", True),
        ("tmpfs", "", "/tmp", False),
    ]
    assert c.mounts[1].tmpfs_size == 64 << 20
    assert list(task.placement.constraints) == ["node.role==worker", "node.labels.zone!=a"]
    assert list(task.placement.preferences) == ["node.labels.zone"]
    assert task.resources.reservations.nano_cpus == 500_000_000
    assert task.resources.reservations.memory_bytes == 64 << 20
    assert task.resources.limits.nano_cpus == 1_500_000_000
    assert task.resources.limits.memory_bytes == 1 << 30 and task.resources.limits.pids == 100
    assert task.restart.condition == opb.RESTART_ON_FAILURE and task.restart.delay == 90.0
    assert task.restart.max_attempts == 4 and task.restart.window == 7200.0
    u = spec.update
    assert (u.parallelism, u.delay, u.failure_action, u.monitor) == (
        2,
        10.0,
        opb.FAILURE_ROLLBACK,
        30.0,
    )
    assert u.max_failure_ratio == 0.25 and u.order == opb.START_FIRST
    r = spec.rollback
    assert r.HasField("parallelism") and r.parallelism == 0
    assert (
        r.failure_action == opb.FAILURE_CONTINUE and r.monitor == 1.0 and r.order == opb.STOP_FIRST
    )
    h = c.healthcheck
    assert list(h.test) == ["CMD-SHELL", "wget -q localhost"]
    assert (h.interval, h.timeout, h.retries, h.start_period) == (5.0, 2.0, 4, 1.0)
    assert [(s.id, s.name, s.target, s.uid, s.gid, s.mode) for s in c.secrets] == [
        ("secret-id-db_pass", "db_pass", "db_pass", 0, 0, 0o444),
        ("secret-id-tls", "tls", "cert.pem", 1, 2, 0o400),
    ]
    assert [(s.id, s.target) for s in c.configs] == [
        ("config-id-nginx_conf", "/nginx_conf"),
        ("config-id-app", "/etc/app.ini"),
    ]
    assert c.hostname == "{{.Service.Name}}-{{.Task.Slot}}"
    assert dict(spec.labels) == {"tier": "web"} and dict(c.labels) == {"c": "1"}
    assert c.HasField("stop_grace_period") and c.stop_grace_period == 30.0
    assert c.stop_signal == "SIGTERM" and c.user == "nobody" and c.dir == "/srv"
    assert list(c.command) == ["/bin/sh", "-c"] and c.command_set
    assert c.read_only and list(c.cap_add) == ["NET_ADMIN"] and list(c.cap_drop) == ["CHOWN"]
    assert [(n.target, list(n.aliases)) for n in task.networks] == [
        ("front", []),
        ("back", ["api", "api2"]),
    ]
    assert [
        (p.published_port, p.target_port, p.protocol, p.publish_mode) for p in spec.endpoint.ports
    ] == [
        (8080, 80, "tcp", "ingress"),
        (53, 53, "udp", "host"),
    ]
    assert spec.endpoint.mode == "dnsrr"
    assert c.image == "nginx:1.25" and list(c.args) == ["echo", "hi"]


def test_modes():
    assert create("--mode", "global", "busybox").mode == opb.GLOBAL
    assert create("--mode", "global", "busybox").replicas == 0
    job = create("--mode", "replicated-job", "--replicas", "5", "busybox")
    assert (job.mode, job.replicas, job.max_concurrent) == (opb.REPLICATED_JOB, 5, 5)
    job = create("--mode", "replicated-job", "--replicas", "5", "--max-concurrent", "2", "x")
    assert job.max_concurrent == 2
    job = create("--mode", "replicated-job", "busybox")
    assert (job.replicas, job.max_concurrent) == (1, 1)
    assert create("--mode", "global-job", "busybox").mode == opb.GLOBAL_JOB


def test_no_healthcheck():
    spec = create("--no-healthcheck", "busybox")
    assert list(spec.task.container.healthcheck.test) == ["NONE"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--mode", "global", "--replicas", "3"],
            "replicas can only be used with replicated or replicated-job mode",
        ),
        (["--max-concurrent", "2"], "max-concurrent can only be used with replicated-job mode"),
        (
            ["--no-healthcheck", "--health-cmd", "true"],
            "--no-healthcheck conflicts with --health-* options",
        ),
        (["--secret", "missing"], "secret not found: missing"),
        (
            ["--secret", "a", "--secret", "source=b,target=a"],
            "duplicate secret target for b not allowed",
        ),
    ],
)
def test_conflicting_flags_are_refused(args, message):
    with pytest.raises(ValueError, match=None) as e:
        create(*args, "busybox")
    assert str(e.value) == message


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli.main.cli, list(args))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--replicas", "-1"],
            'invalid argument "-1" for "--replicas" flag: strconv.ParseUint: parsing "-1": invalid syntax',
        ),
        (
            ["--update-delay", "5x"],
            'invalid argument "5x" for "--update-delay" flag: time: invalid duration "5x"',
        ),
        (["--mount", "type=bind,target=/x"], "source is required when specifying bind mounts"),
        (["--mount", "type=nfs,target=/x"], "type 'nfs' is not valid"),
        (["--mount", "source=/x"], "target is required"),
        (["--secret", "source=a,bogus=1"], "invalid field key bogus"),
        (["--secret", "target=a"], "source is required"),
        (["--secret", "source=a,uid"], "invalid field 'uid' must be a key=value pair"),
        (["--mode", "daemon"], 'invalid mode "daemon"'),
        (["--restart-condition", "always"], 'invalid restart condition "always"'),
        (["--update-failure-action", "explode"], "invalid failure action"),
        (["--rollback-failure-action", "rollback"], "invalid failure action"),
        (["--update-max-failure-ratio", "2"], "the value must be between 0 and 1"),
        (["--placement-pref", "pack=node.labels.x"], "only spread is supported"),
        (["-p", "published=8080"], "missing mandatory field 'target'"),
        (["-p", "published=8080,target=80,mode=bridge"], "invalid publish mode value"),
        (["--limit-memory", "12q"], "invalid size: '12q'"),
        (["--reserve-cpu", "x"], "failed to parse x as a rational number"),
    ],
)
def test_bad_flags_are_one_line_errors(args, message):
    res = invoke("service", "create", *args, "busybox")
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
    assert res.stdout == ""


def test_scale_specifier_errors():
    res = invoke("service", "scale", "web")
    assert res.exit_code == 1 and "invalid scale specifier 'web'" in res.stderr
    res = invoke("service", "scale", "web=-1")
    assert res.exit_code == 1 and "invalid replicas value -1" in res.stderr
    assert ss.parse_scale("web=3") == ("web", 3)


def test_scale_spec_refuses_global_services():
    with pytest.raises(
        ValueError, match="scale can only be used with replicated or replicated-job mode"
    ):
        ss.scale_spec(opb.ServiceSpec(mode=opb.GLOBAL), 3)
    assert ss.scale_spec(opb.ServiceSpec(replicas=1), 4).replicas == 4


# ---- update ----


def existing() -> opb.ServiceSpec:
    return create(
        "--name", "web", "--replicas", "2", "-e", "A=1", "-e", "B=2",
        "--mount", "type=volume,source=data,target=/data",
        "--mount", "type=tmpfs,target=/tmp",
        "--constraint", "node.role==worker", "--placement-pref", "spread=node.labels.zone",
        "--secret", "s1", "--config", "c1", "-l", "a=1", "-l", "b=2",
        "--container-label", "x=1", "--network", "front", "-p", "8080:80", "-p", "9090:90",
        "--cap-add", "NET_ADMIN", "--health-cmd", "true",
        "nginx", "serve",
    )  # fmt: skip


def test_update_without_flags_changes_nothing():
    spec = existing()
    assert update(spec) == spec


def test_update_merges_add_and_rm_forms():
    before = existing()
    spec = update(
        before,
        "--image", "nginx:2", "--args", "serve --fast",
        "--env-add", "A=9", "--env-add", "C=3", "--env-rm", "B",
        "--mount-rm", "/tmp", "--mount-add", "type=volume,source=other,target=/data",
        "--constraint-rm", "node.role==worker", "--constraint-add", "node.labels.ssd==true",
        "--placement-pref-rm", "spread=node.labels.zone", "--placement-pref-add", "spread=node.labels.rack",
        "--secret-rm", "s1", "--secret-add", "source=s2,target=t2",
        "--config-rm", "c1", "--config-add", "c2",
        "--label-rm", "a", "--label-add", "b=3", "--label-add", "c=4",
        "--container-label-rm", "x", "--container-label-add", "y=2",
        "--network-rm", "front", "--network-add", "back",
        "--publish-rm", "90", "--publish-add", "8080:81",
        "--replicas", "5", "--force", "--cap-drop", "NET_ADMIN",
        "--update-parallelism", "3", "--rollback-monitor", "2s",
        "--limit-memory", "128m", "--restart-condition", "none",
        "--hostname", "h", "--user", "u", "--workdir", "/w", "--read-only",
        "--stop-grace-period", "1s", "--stop-signal", "KILL", "--entrypoint", "tini --",
        "--health-interval", "3s",
    )  # fmt: skip
    c, task = spec.task.container, spec.task
    assert c.image == "nginx:2" and list(c.args) == ["serve", "--fast"]
    assert list(c.env) == ["A=9", "C=3"]
    assert [(m.source, m.target) for m in c.mounts] == [("other", "/data")]
    assert list(task.placement.constraints) == ["node.labels.ssd==true"]
    assert list(task.placement.preferences) == ["node.labels.rack"]
    assert [(s.name, s.target) for s in c.secrets] == [("s2", "t2")]
    assert [(s.name, s.target) for s in c.configs] == [("c2", "/c2")]
    assert dict(spec.labels) == {"b": "3", "c": "4"} and dict(c.labels) == {"y": "2"}
    assert [n.target for n in task.networks] == ["back"]
    assert [(p.published_port, p.target_port) for p in spec.endpoint.ports] == [(8080, 81)]
    assert spec.replicas == 5 and task.force_update == before.task.force_update + 1
    assert list(c.cap_add) == [] and list(c.cap_drop) == ["NET_ADMIN"]
    assert spec.update.parallelism == 3 and spec.rollback.monitor == 2.0
    assert task.resources.limits.memory_bytes == 128 << 20
    assert task.restart.condition == opb.RESTART_NONE
    assert (c.hostname, c.user, c.dir, c.read_only) == ("h", "u", "/w", True)
    assert c.stop_grace_period == 1.0 and c.stop_signal == "SIGKILL"
    assert list(c.command) == ["tini", "--"] and c.command_set
    assert list(c.healthcheck.test) == ["CMD-SHELL", "true"] and c.healthcheck.interval == 3.0
    assert spec.name == "web" and before.task.container.image == "nginx"  # a copy


def test_update_refuses_replicas_of_a_global_service():
    with pytest.raises(ValueError, match="replicas can only be used"):
        update(create("--mode", "global", "busybox"), "--replicas", "2")


def test_update_secret_add_to_an_existing_target_is_refused():
    with pytest.raises(ValueError, match="duplicate secret target for s1 not allowed"):
        update(existing(), "--secret-add", "s1")


def test_update_no_healthcheck_and_back():
    spec = update(existing(), "--no-healthcheck")
    assert list(spec.task.container.healthcheck.test) == ["NONE"]
    spec = update(spec, "--health-cmd", "curl -f localhost")
    assert list(spec.task.container.healthcheck.test) == ["CMD-SHELL", "curl -f localhost"]


@pytest.mark.parametrize(
    ("value", "port"),
    [
        ("80", ss.Port(80)),
        ("8080:80/udp", ss.Port(80, 8080, "udp")),
        ("published=8080,target=80", ss.Port(80, 8080)),
        ("target=80,mode=host", ss.Port(80, 0, "tcp", "host")),
    ],
)
def test_publish_forms(value, port):
    assert ss.parse_publish(value) == port


def test_file_ref_forms():
    assert ss.parse_file_ref("db") == ss.FileRef("db")
    assert ss.parse_file_ref("src=db,dst=x,mode=0600") == ss.FileRef("db", "x", 0, 0, 0o600)


def test_every_service_option_has_help():
    for command in service_cmd.service.commands.values():
        assert command.help, command.name
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"{command.name} {param.opts}"
    assert "detach" in CREATE_PARAMS and len(sf.COMMON) > 40


# ---- DNS and hosts ----


def test_dns_and_host_flags_are_encoded():
    spec = create(
        "--dns", "10.0.0.2", "--dns", "2001:db8::1", "--dns", "10.0.0.2",
        "--dns-search", "example.com", "--dns-search", ".",
        "--dns-option", "ndots:2", "--dns-option", "rotate",
        "--host", "db:10.0.0.9", "--host", "v6=[2001:db8::9]",
        "--network", "front", "-p", "8080:80", "--endpoint-mode", "vip",
        "busybox",
    )  # fmt: skip
    c = spec.task.container
    assert list(c.dns_nameservers) == ["10.0.0.2", "2001:db8::1"]
    assert list(c.dns_search) == ["example.com", "."]
    assert list(c.dns_options) == ["ndots:2", "rotate"]
    assert list(c.hosts) == ["10.0.0.9 db", "2001:db8::9 v6"]
    assert [n.target for n in spec.task.networks] == ["front"]  # unchanged by the new flags
    assert spec.endpoint.mode == "vip" and spec.endpoint.ports[0].published_port == 8080


def test_dns_and_host_updates():
    spec = create(
        "--dns", "10.0.0.2", "--dns", "10.0.0.3", "--dns-search", "a.example",
        "--dns-option", "ndots:2", "--host", "db:10.0.0.9", "--host", "db:10.0.0.10",
        "--host", "cache:10.0.0.11", "busybox",
    )  # fmt: skip
    spec.task.container.hosts.append("10.0.0.12 alias1 alias2")
    updated = update(
        spec,
        "--dns-rm", "10.0.0.2", "--dns-add", "10.0.0.4", "--dns-add", "10.0.0.3",
        "--dns-search-rm", "a.example", "--dns-search-add", "b.example",
        "--dns-option-rm", "ndots:2", "--dns-option-add", "timeout:1",
        "--host-rm", "db:10.0.0.9", "--host-rm", "alias1", "--host-add", "web:10.0.0.20",
        "--host-add", "cache:10.0.0.11",
    )  # fmt: skip
    c = updated.task.container
    assert list(c.dns_nameservers) == ["10.0.0.4", "10.0.0.3"]
    assert list(c.dns_search) == ["b.example"] and list(c.dns_options) == ["timeout:1"]
    assert list(c.hosts) == [
        "10.0.0.10 db",
        "10.0.0.11 cache",
        "10.0.0.12 alias2",
        "10.0.0.20 web",
    ]
    gone = update(updated, "--host-rm", "db", "--host-rm", "alias2")
    assert list(gone.task.container.hosts) == ["10.0.0.11 cache", "10.0.0.20 web"]
    assert update(updated) == updated


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dns", "8.8.8"], "IP address is not correctly formatted: 8.8.8"),
        (["--dns", "dns.google"], "IP address is not correctly formatted: dns.google"),
        (["--dns-search", "-bad.example"], "-bad.example is not a valid domain"),
        (["--dns-search", "a..b"], "a..b is not a valid domain"),
        (["--dns-option", ""], "invalid DNS option"),
        (["--dns-option", "ndots:1 rotate"], "invalid DNS option"),
        (["--host", "db"], 'bad format for add-host: "db"'),
        (["--host", ":10.0.0.1"], 'bad format for add-host: ":10.0.0.1"'),
        (["--host", "db:10.0.0.300"], 'invalid IP address in add-host: "10.0.0.300"'),
        (["--host", "db:"], 'invalid IP address in add-host: ""'),
    ],
)
def test_bad_dns_and_host_flags_are_one_line_errors(args, message):
    res = invoke("service", "create", *args, "busybox")
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
    assert res.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dns", "1.1.1.1\nnameserver 6.6.6.6"], "IP address is not correctly formatted"),
        (["--dns-search", "ok.example\nnameserver 6.6.6.6"], "is not a valid domain"),
        (["--dns-option", "ndots:1\nnameserver 6.6.6.6"], "invalid DNS option"),
        (["--host", "evil\n1.2.3.4 x:10.0.0.1"], "bad format for add-host"),
        (["--host", "a#b:10.0.0.1"], "bad format for add-host"),
    ],
)
def test_lines_smuggled_into_resolv_conf_or_hosts_are_refused(args, message):
    # (the flag error repeats the value as given, newline included: cli.parse's wording)
    res = invoke("service", "create", *args, "busybox")
    assert res.exit_code == 1 and message in res.stderr, res.stderr
    assert res.stdout == ""


def test_bad_host_rm_is_refused():
    res = invoke("service", "update", "--host-rm", "db:not-an-ip", "web")
    assert res.exit_code == 1 and "invalid IP address in add-host" in res.stderr
    res = invoke("service", "update", "--dns-add", "x", "web")
    assert res.exit_code == 1 and "IP address is not correctly formatted: x" in res.stderr
