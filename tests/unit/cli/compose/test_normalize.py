"""Normalisation of the loader's compose document into `cli.compose.model.Project`.

Documents are built by hand (as `cli.compose.load.Loaded` objects, with a position for
each service, so errors can be checked for their `file:line: key.path:` prefix); one
test at the end goes through the real loader too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cli.compose.model import (
    Build,
    DependsOn,
    FileRef,
    Healthcheck,
    Mount,
    Network,
    Port,
    Resources,
    RestartPolicy,
    ServiceNetwork,
    UpdateConfig,
)

load = pytest.importorskip("cli.compose.load", reason="cli.compose.load has not landed yet")
normalize_mod = pytest.importorskip("cli.compose.normalize")
normalize = normalize_mod.normalize
dump = normalize_mod.dump

pytestmark = pytest.mark.unit


def loaded(
    data: dict[str, Any],
    base_dir: Path = Path("/proj"),
    environ: dict[str, str] | None = None,
    positions: dict[tuple[str | int, ...], int] | None = None,
) -> Any:
    """A `Loaded` whose services (and their keys) sit on made-up lines of stack.yml."""
    pos: dict[tuple[str | int, ...], Any] = {("services",): load.Pos("stack.yml", 1)}
    line = 2
    for name, service in (data.get("services") or {}).items():
        pos[("services", name)] = load.Pos("stack.yml", line)
        line += 1
        for key in service or {}:
            pos[("services", name, key)] = load.Pos("stack.yml", line)
            line += 1
    for path, number in (positions or {}).items():
        pos[path] = load.Pos("stack.yml", number)
    return load.Loaded(
        data=data, positions=pos, base_dir=base_dir, environ=dict(environ or {}), warnings=[]
    )


def service(data: dict[str, Any], **top: Any) -> Any:
    """Normalise one service `web` (with image busybox unless given) and return it."""
    project = normalize(loaded({"services": {"web": {"image": "busybox", **data}}, **top}))
    return project.services["web"]


def error(data: dict[str, Any], **kwargs: Any) -> str:
    with pytest.raises(load.ComposeError) as err:
        normalize(loaded(data, **kwargs))
    return str(err.value)


def web_error(data: dict[str, Any], **top: Any) -> str:
    return error({"services": {"web": {"image": "busybox", **data}}, **top})


# ---- defaults -----------------------------------------------------------------------


def test_minimal_service_gets_the_default_network():
    project = normalize(loaded({"services": {"web": {"image": "nginx"}}}))
    web = project.services["web"]
    assert web.image == "nginx"
    assert web.networks == (ServiceNetwork("default"),)
    assert project.networks == {"default": Network(key="default", name="default")}
    assert project.networks["default"].driver == "overlay"
    assert web.deploy.mode == "replicated" and web.deploy.replicas is None
    assert web.deploy.restart_policy is None and web.deploy.update_config is None
    assert project.warnings == ()


def test_no_default_network_when_no_service_uses_it():
    project = normalize(
        loaded(
            {
                "services": {"web": {"image": "x", "networks": ["front"]}},
                "networks": {"front": None},
            }
        )
    )
    assert set(project.networks) == {"front"}


def test_image_or_build_is_required():
    message = error({"services": {"web": {"command": "true"}}})
    assert message == "stack.yml:2: services.web: image or build is required"


@pytest.mark.parametrize("name", ["-web", "we b", "web/1", "_x", 1])
def test_invalid_service_names(name):
    assert "invalid service name" in error({"services": {name: {"image": "x"}}})


# ---- errors: unknown keys, wrong types, warnings --------------------------------------


def test_unknown_key_is_an_error_with_file_line_and_path():
    message = web_error({"imagee": "x"})
    assert message == "stack.yml:4: services.web.imagee: unknown key"


def test_unknown_top_level_key():
    assert error({"services": {}, "servics": {}}) == "servics: unknown key"


def test_extension_fields_are_ignored():
    project = normalize(
        loaded({"x-common": {"a": 1}, "services": {"web": {"image": "x", "x-meta": [1]}}})
    )
    assert project.services["web"].image == "x"


def test_wrong_type_names_the_key():
    assert web_error({"read_only": "maybe"}) == (
        "stack.yml:4: services.web.read_only: must be a boolean, not 'maybe'"
    )
    assert "services.web.cap_add: must be a list" in web_error({"cap_add": "NET_ADMIN"})
    assert "services.web.deploy: must be a mapping" in web_error({"deploy": ["x"]})


def test_unsupported_options_are_one_sorted_warning():
    data = {
        "services": {
            "web": {"image": "x", "restart": "always", "container_name": "w", "privileged": True},
            "db": {"image": "y", "links": ["web"], "restart": "always", "network_mode": "host"},
        }
    }
    project = normalize(loaded(data))
    assert project.warnings == (
        "Ignoring unsupported options: container_name, links, network_mode, privileged, restart",
    )


def test_loader_warnings_come_first():
    data = loaded({"services": {"web": {"image": "x", "tty": True}}})
    data.warnings.append("from the loader")
    assert normalize(data).warnings == (
        "from the loader",
        "Ignoring unsupported options: tty",
    )


# ---- ports ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "ports"),
    [
        ("8080:80", [Port(80, 8080)]),
        ("80", [Port(80)]),
        (80, [Port(80)]),
        ("8080:80/udp", [Port(80, 8080, "udp")]),
        ("8080-8081:80-81", [Port(80, 8080), Port(81, 8081)]),
        ("80-81", [Port(80), Port(81)]),
        ("127.0.0.1:8080:80", [Port(80, 8080)]),
        ({"target": 80, "published": 8080, "mode": "host"}, [Port(80, 8080, "tcp", "host")]),
        ({"target": "53", "published": "5353", "protocol": "udp"}, [Port(53, 5353, "udp")]),
        ({"target": 80}, [Port(80)]),
    ],
)
def test_ports(spec, ports):
    assert list(service({"ports": [spec]}).ports) == ports


def test_host_ip_is_warned_about():
    project = normalize(loaded({"services": {"web": {"image": "x", "ports": ["127.0.0.1:80:80"]}}}))
    assert len(project.warnings) == 1
    assert "services.web.ports.0" in project.warnings[0] and "host IP" in project.warnings[0]


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("80x", "invalid port '80x'"),
        ("0", "invalid port '0'"),
        ("70000:80", "invalid port '70000:80'"),
        ("8080-8082:80-81", "ranges of different sizes"),
        ("80/sctp", "invalid protocol 'sctp'"),
    ],
)
def test_bad_ports(spec, reason):
    message = web_error({"ports": [spec]})
    assert message.startswith("stack.yml:4: services.web.ports.0: ")
    assert reason in message


def test_a_port_is_published_once():
    message = web_error({"ports": ["8080:80", {"target": 81, "published": 8080}]})
    assert message == "stack.yml:4: services.web.ports.1: port 8080/tcp is published more than once"
    assert len(service({"ports": ["53:53/udp", "53:53/tcp"]}).ports) == 2


def test_bad_long_port():
    assert "services.web.ports.0.mode: invalid value 'bridge'" in web_error(
        {"ports": [{"target": 80, "mode": "bridge"}]}
    )
    assert "services.web.ports.0: target is required" in web_error({"ports": [{"published": 1}]})


# ---- volumes --------------------------------------------------------------------------


def test_volume_short_syntax(tmp_path):
    data = {
        "services": {
            "web": {
                "image": "x",
                "volumes": ["data:/var/data:ro", "./site:/srv", "/etc/hosts:/h", "/anon"],
            }
        },
        "volumes": {"data": None},
    }
    web = normalize(loaded(data, base_dir=tmp_path)).services["web"]
    assert web.volumes == (
        Mount("volume", "data", "/var/data", read_only=True),
        Mount("bind", str(tmp_path / "site"), "/srv"),
        Mount("bind", "/etc/hosts", "/h"),
        Mount("volume", "", "/anon"),
    )


def test_volume_long_syntax_and_tmpfs():
    volumes = [
        {"type": "volume", "source": "data", "target": "/d", "read_only": True},
        {"type": "bind", "source": "./conf", "target": "/c"},
        {"type": "tmpfs", "target": "/t", "tmpfs": {"size": "64m"}},
        {"type": "tmpfs", "target": "/u", "tmpfs": {"size": 1024}},
    ]
    web = service({"volumes": volumes, "tmpfs": ["/run:size=1k", "/tmp"]}, volumes={"data": {}})
    assert web.volumes == (
        Mount("volume", "data", "/d", True),
        Mount("bind", "/proj/conf", "/c"),
        Mount("tmpfs", "", "/t", False, 64 << 20),
        Mount("tmpfs", "", "/u", False, 1024),
        Mount("tmpfs", "", "/run", False, 1024),
        Mount("tmpfs", "", "/tmp"),
    )


def test_volume_errors():
    assert "services.web.volumes.0: undefined volume 'data'" in web_error({"volumes": ["data:/d"]})
    assert "invalid mode 'rx'" in web_error({"volumes": ["/a:/b:rx"]})
    assert "container path 'b' must be absolute" in web_error({"volumes": ["/a:b"]})
    assert "services.web.volumes.0.type: invalid value 'npipe'" in web_error(
        {"volumes": [{"type": "npipe", "target": "/x"}]}
    )
    assert "services.web.volumes.0.tmpfs.size: invalid size 'big'" in web_error(
        {"volumes": [{"type": "tmpfs", "target": "/x", "tmpfs": {"size": "big"}}]}
    )


def test_bind_source_may_not_escape_the_project():
    message = web_error({"volumes": ["../outside:/x"]})
    assert message == (
        "stack.yml:4: services.web.volumes.0: '../outside' escapes the project directory"
    )
    # ... unless written as an absolute path
    assert service({"volumes": ["/proj/../etc:/x"]}).volumes[0].source == "/etc"
    assert service({"volumes": ["./a/../b:/x"]}).volumes[0].source == "/proj/b"


# ---- networks -------------------------------------------------------------------------


def test_service_networks_list_and_map():
    top = {"networks": {"front": None, "back": {"driver": "overlay"}}}
    assert service({"networks": ["front", "back"]}, **top).networks == (
        ServiceNetwork("front"),
        ServiceNetwork("back"),
    )
    web = service({"networks": {"front": None, "back": {"aliases": ["db", "store"]}}}, **top)
    assert web.networks == (ServiceNetwork("front"), ServiceNetwork("back", ("db", "store")))


def test_undefined_network():
    assert "services.web.networks.0: undefined network 'nope'" in web_error({"networks": ["nope"]})


def test_top_level_network():
    top = {
        "networks": {
            "front": {
                "name": "shared-front",
                "attachable": True,
                "internal": "true",
                "labels": ["a=1", "b"],
                "driver_opts": {"com.docker.network.driver.mtu": 1400},
                "ipam": {"config": [{"subnet": "10.5.0.0/24", "gateway": "10.5.0.1"}]},
            },
            "ext": {"external": True},
            "legacy": {"external": {"name": "real"}},
        }
    }
    project = normalize(loaded({"services": {"web": {"image": "x"}}, **top}))
    front = project.networks["front"]
    assert front == Network(
        key="front",
        name="shared-front",
        attachable=True,
        internal=True,
        labels={"a": "1", "b": ""},
        subnets=(("10.5.0.0/24", "10.5.0.1", None),),
        driver_opts={"com.docker.network.driver.mtu": "1400"},
    )
    assert project.networks["ext"] == Network(key="ext", name="ext", external=True)
    assert project.networks["legacy"].name == "real"
    assert "default" in project.networks


def test_external_network_with_driver_is_refused():
    message = error({"services": {}, "networks": {"n": {"external": True, "driver": "bridge"}}})
    assert "networks.n: an external network" in message


# ---- secrets and configs -------------------------------------------------------------


def test_secrets_and_configs(tmp_path):
    data = {
        "services": {
            "web": {
                "image": "x",
                "secrets": ["token", {"source": "cert", "target": "tls.pem", "mode": "0440"}],
                "configs": [
                    {"source": "conf", "target": "/etc/c", "uid": "10", "gid": 20, "mode": 0o400}
                ],
            }
        },
        "secrets": {
            "token": {"file": "./token.txt"},
            "cert": {"environment": "CERT", "labels": {"k": "v"}},
        },
        "configs": {"conf": {"external": True, "name": "shared"}},
    }
    project = normalize(loaded(data, base_dir=tmp_path))
    web = project.services["web"]
    assert web.secrets == (FileRef("token", "token"), FileRef("cert", "tls.pem", mode=0o440))
    assert web.configs == (FileRef("conf", "/etc/c", "10", "20", 0o400),)
    assert project.secrets["token"].file == tmp_path / "token.txt"
    assert project.secrets["cert"].environment == "CERT"
    assert project.secrets["cert"].labels == {"k": "v"}
    assert project.configs["conf"].external and project.configs["conf"].name == "shared"


def test_secret_errors():
    assert "services.web.secrets.0: undefined secret 'nope'" in web_error({"secrets": ["nope"]})
    message = error({"services": {}, "secrets": {"s": {"file": "../s"}}})
    assert message == "secrets.s.file: '../s' escapes the project directory"
    message = error({"services": {}, "secrets": {"s": {"file": "a", "external": True}}})
    assert "exactly one of file, environment or external" in message
    assert "invalid file mode '0999'" in web_error(
        {"secrets": [{"source": "s", "mode": "0999"}]}, secrets={"s": {"file": "/s"}}
    )


def test_absolute_secret_path_is_allowed():
    project = normalize(loaded({"services": {}, "secrets": {"s": {"file": "/etc/../run/s"}}}))
    assert project.secrets["s"].file == Path("/run/s")


# ---- environment ----------------------------------------------------------------------


def test_environment_map_and_list():
    environ = {"FROM_SHELL": "shell", "ALSO": "also"}
    data: dict[str, Any] = {
        "environment": {"A": "1", "B": 2, "C": True, "FROM_SHELL": None, "UNSET": None}
    }
    web = normalize(
        loaded({"services": {"web": {"image": "x", **data}}}, environ=environ)
    ).services["web"]
    assert web.environment == {"A": "1", "B": "2", "C": "true", "FROM_SHELL": "shell"}
    data = {"environment": ["A=1", "B=x=y", "ALSO", "UNSET", "EMPTY="]}
    web = normalize(
        loaded({"services": {"web": {"image": "x", **data}}}, environ=environ)
    ).services["web"]
    assert web.environment == {"A": "1", "B": "x=y", "ALSO": "also", "EMPTY": ""}


def test_env_file_under_explicit_environment(tmp_path):
    (tmp_path / "a.env").write_text(
        "# comment\n\nA=from-file\nB='quoted # not a comment'\nexport C=\"c\"\nD=d # comment\nSH\n"
    )
    (tmp_path / "b.env").write_text("A=second\nE=e\n")
    base = {"image": "x", "environment": {"B": "explicit"}}
    data = {"services": {"web": {**base, "env_file": ["a.env", "./b.env"]}}}
    web = normalize(loaded(data, base_dir=tmp_path, environ={"SH": "sh"})).services["web"]
    assert web.environment == {
        "A": "second",
        "B": "explicit",
        "C": "c",
        "D": "d",
        "SH": "sh",
        "E": "e",
    }
    data = {"services": {"web": {"image": "x", "env_file": "a.env"}}}
    assert (
        normalize(loaded(data, base_dir=tmp_path)).services["web"].environment["A"] == "from-file"
    )


def test_env_file_errors(tmp_path):
    message = error(
        {"services": {"web": {"image": "x", "env_file": "missing.env"}}}, base_dir=tmp_path
    )
    assert message.startswith("stack.yml:4: services.web.env_file: env file ")
    assert "not found" in message
    message = error(
        {"services": {"web": {"image": "x", "env_file": ["../x.env"]}}}, base_dir=tmp_path
    )
    assert (
        message == "stack.yml:4: services.web.env_file.0: '../x.env' escapes the project directory"
    )
    data = {
        "services": {"web": {"image": "x", "env_file": [{"path": "no.env", "required": False}]}}
    }
    assert normalize(loaded(data, base_dir=tmp_path)).services["web"].environment == {}


# ---- command, healthcheck, misc keys --------------------------------------------------


def test_command_and_entrypoint():
    web = service({"command": "sh -c 'echo hi there'", "entrypoint": ["/init", "--"]})
    assert web.command == ("sh", "-c", "echo hi there")
    assert web.entrypoint == ("/init", "--")
    assert service({}).command is None


@pytest.mark.parametrize(
    ("spec", "check"),
    [
        (
            {"test": "curl -f localhost", "interval": "1m30s", "timeout": "500ms", "retries": 3},
            Healthcheck(("CMD-SHELL", "curl -f localhost"), 90.0, 0.5, None, 3),
        ),
        (
            {"test": ["CMD", "true"], "start_period": 10, "interval": "10s"},
            Healthcheck(("CMD", "true"), 10.0, None, 10.0),
        ),
        ({"disable": True}, Healthcheck(disable=True)),
        ({"test": ["NONE"]}, Healthcheck(disable=True)),
    ],
)
def test_healthcheck(spec, check):
    assert service({"healthcheck": spec}).healthcheck == check


def test_healthcheck_errors():
    assert "services.web.healthcheck.interval: invalid duration '10 parsecs'" in web_error(
        {"healthcheck": {"test": "true", "interval": "10 parsecs"}}
    )
    assert "must start with NONE, CMD or CMD-SHELL" in web_error(
        {"healthcheck": {"test": ["curl"]}}
    )


def test_scalar_keys():
    web = service(
        {
            "hostname": "h",
            "user": 1000,
            "working_dir": "/w",
            "read_only": True,
            "cap_add": ["NET_ADMIN"],
            "cap_drop": ["ALL"],
            "labels": {"a": "b"},
            "stop_grace_period": "1m",
            "stop_signal": "SIGINT",
            "init": True,
            "dns": "8.8.8.8",
            "dns_search": ["example.com"],
            "extra_hosts": ["db:10.0.0.2", "cache=10.0.0.3"],
            "ulimits": {"nproc": 65535, "nofile": {"soft": 1024, "hard": 2048}},
            "sysctls": ["net.core.somaxconn=1024"],
        }
    )
    assert (web.hostname, web.user, web.working_dir, web.read_only) == ("h", "1000", "/w", True)
    assert web.cap_add == ("NET_ADMIN",) and web.cap_drop == ("ALL",)
    assert web.labels == {"a": "b"}
    assert web.stop_grace_period == 60.0 and web.stop_signal == "SIGINT" and web.init is True
    assert web.dns == ("8.8.8.8",) and web.dns_search == ("example.com",)
    assert web.extra_hosts == ("db:10.0.0.2", "cache:10.0.0.3")
    assert web.ulimits == {"nproc": (65535, 65535), "nofile": (1024, 2048)}
    assert web.sysctls == {"net.core.somaxconn": "1024"}
    assert service({"extra_hosts": {"db": "10.0.0.2"}}).extra_hosts == ("db:10.0.0.2",)


def test_build_short_and_long(tmp_path):
    data: dict[str, Any] = {"services": {"web": {"build": "./app"}}}
    assert normalize(loaded(data, base_dir=tmp_path)).services["web"].build == Build(
        tmp_path / "app"
    )
    data = {
        "services": {
            "web": {
                "image": "web:dev",
                "build": {
                    "context": ".",
                    "dockerfile": "Dockerfile.dev",
                    "args": ["A=1", "FROM_ENV"],
                    "target": "final",
                },
            }
        }
    }
    web = normalize(loaded(data, base_dir=tmp_path, environ={"FROM_ENV": "e"})).services["web"]
    assert web.build == Build(tmp_path, "Dockerfile.dev", {"A": "1", "FROM_ENV": "e"}, "final")
    assert "services.web.build: '../' escapes" in error(
        {"services": {"web": {"build": "../"}}}, base_dir=tmp_path
    )


# ---- depends_on -------------------------------------------------------------------------


def test_depends_on_short_and_long():
    data = {
        "services": {
            "web": {"image": "x", "depends_on": ["db"]},
            "db": {
                "image": "y",
                "depends_on": {"init": {"condition": "service_completed_successfully"}},
            },
            "init": {"image": "z", "depends_on": {"cache": None}},
            "cache": {"image": "c"},
        }
    }
    services = normalize(loaded(data)).services
    assert services["web"].depends_on == (DependsOn("db"),)
    assert services["db"].depends_on == (DependsOn("init", "service_completed_successfully"),)
    assert services["init"].depends_on == (DependsOn("cache", "service_started"),)


def test_depends_on_errors():
    data: dict[str, Any] = {"services": {"web": {"image": "x", "depends_on": ["nope"]}}}
    assert error(data) == "stack.yml:4: services.web.depends_on.0: undefined service 'nope'"
    data = {"services": {"web": {"image": "x", "depends_on": {"db": {"condition": "ready"}}}}}
    assert "services.web.depends_on.db.condition: invalid value 'ready'" in error(data)


def test_depends_on_cycle():
    data = {
        "services": {
            "a": {"image": "x", "depends_on": ["b"]},
            "b": {"image": "x", "depends_on": {"a": {"condition": "service_healthy"}}},
        }
    }
    assert error(data) == "stack.yml:4: services.a.depends_on: depends_on cycle: a -> b -> a"
    data = {"services": {"a": {"image": "x", "depends_on": ["a"]}}}
    assert "depends_on cycle: a -> a" in error(data)


# ---- deploy ----------------------------------------------------------------------------


def test_deploy_full():
    deploy = service(
        {
            "deploy": {
                "mode": "replicated",
                "replicas": "3",
                "labels": ["tier=front"],
                "endpoint_mode": "dnsrr",
                "placement": {
                    "constraints": ["node.role == worker"],
                    "preferences": [{"spread": "node.labels.zone"}],
                    "max_replicas_per_node": 2,
                },
                "resources": {
                    "limits": {"cpus": "0.5", "memory": "512M", "pids": 100},
                    "reservations": {"cpus": 0.25, "memory": "1g"},
                },
                "restart_policy": {"condition": "on-failure", "delay": "5s", "max_attempts": 3},
                "update_config": {
                    "parallelism": 2,
                    "delay": "10s",
                    "failure_action": "rollback",
                    "monitor": "30s",
                    "max_failure_ratio": 0.3,
                    "order": "start-first",
                },
                "rollback_config": {"parallelism": 0},
            }
        }
    ).deploy
    assert deploy.replicas == 3 and deploy.labels == {"tier": "front"}
    assert deploy.endpoint_mode == "dnsrr"
    assert deploy.constraints == ("node.role == worker",)
    assert deploy.preferences == ("node.labels.zone",)
    assert deploy.max_replicas_per_node == 2
    assert deploy.limits == Resources(500_000_000, 512 << 20, 100)
    assert deploy.reservations == Resources(250_000_000, 1 << 30, 0)
    assert deploy.restart_policy == RestartPolicy("on-failure", 5.0, 3, None)
    assert deploy.update_config == UpdateConfig(2, 10.0, "rollback", 30.0, 0.3, "start-first")
    assert deploy.rollback_config == UpdateConfig(parallelism=0)


def test_deploy_errors():
    assert "services.web.deploy.mode: invalid value 'daemon'" in web_error(
        {"deploy": {"mode": "daemon"}}
    )
    assert "services.web.deploy.replicas: not allowed with mode global" in web_error(
        {"deploy": {"mode": "global", "replicas": 2}}
    )
    assert "services.web.deploy.resources.limits.cpus: invalid cpus 'lots'" in web_error(
        {"deploy": {"resources": {"limits": {"cpus": "lots"}}}}
    )
    assert "services.web.deploy.rollback_config.failure_action: invalid value 'rollback'" in (
        web_error({"deploy": {"rollback_config": {"failure_action": "rollback"}}})
    )
    assert "services.web.deploy.replicas: must be an integer" in web_error(
        {"deploy": {"replicas": "many"}}
    )


def test_position_of_nested_key_when_known():
    data = {"services": {"web": {"image": "x", "deploy": {"replicas": "many"}}}}
    message = error(data, positions={("services", "web", "deploy", "replicas"): 42})
    assert message == "stack.yml:42: services.web.deploy.replicas: must be an integer, not 'many'"


# ---- volumes, configs top level; dump ---------------------------------------------------


def test_top_level_volumes():
    top = {
        "volumes": {
            "data": None,
            "ext": {"external": True, "name": "real"},
            "l": {"labels": {"a": "b"}, "driver": "local"},
        }
    }
    project = normalize(loaded({"services": {}, **top}))
    assert project.volumes["data"].name == "data" and not project.volumes["data"].external
    assert project.volumes["ext"].external and project.volumes["ext"].name == "real"
    assert project.volumes["l"].driver == "local" and project.volumes["l"].labels == {"a": "b"}


def test_dump_is_deterministic_and_sorted():
    data: dict[str, Any] = {
        "services": {
            "web": {"image": "x", "ports": ["80:80"], "environment": {"B": "2", "A": "1"}},
            "api": {"image": "y", "deploy": {"replicas": 0}},
        },
        "secrets": {"s": {"file": "/s"}},
    }
    first = dump(normalize(loaded(data)))
    reordered = {
        "services": dict(reversed(list(data["services"].items()))),
        "secrets": data["secrets"],
    }
    assert dump(normalize(loaded(reordered))) == first
    assert first.index("api:") < first.index("web:")
    assert "A: '1'" in first and first.index("A: '1'") < first.index("B: '2'")
    assert "replicas: 0" in first  # zeros are kept, only None/False/empty are left out
    assert "read_only" not in first
    assert "limits" not in first  # all-zero resources are left out
    import yaml

    parsed = yaml.safe_load(first)
    assert parsed["services"]["web"]["ports"] == [
        {"mode": "ingress", "protocol": "tcp", "published": 80, "target": 80}
    ]
    assert parsed["secrets"]["s"]["file"] == "/s"
    assert parsed["networks"]["default"]["driver"] == "overlay"


# ---- through the real loader --------------------------------------------------------------


def test_through_the_loader(tmp_path):
    (tmp_path / "stack.yml").write_text(
        "services:\n"
        "  web:\n"
        "    image: busybox\n"
        "    ports:\n"
        '      - "${PORT:-8080}:80"\n'
        "      - 80x\n"
    )
    result = load.load([str(tmp_path / "stack.yml")], environ={})
    with pytest.raises(load.ComposeError) as err:
        normalize(result)
    message = str(err.value)
    assert message.endswith("services.web.ports.1: invalid port '80x'")
    assert "stack.yml:" in message
    (tmp_path / "stack.yml").write_text(
        "services:\n  web:\n    image: busybox\n    ports: ['${PORT:-8080}:80']\n"
    )
    result = load.load([str(tmp_path / "stack.yml")], environ={"PORT": "9000"})
    assert normalize(result).services["web"].ports == (Port(80, 9000),)


def test_bad_env_file_line(tmp_path):
    (tmp_path / "a.env").write_text("A=1\nNOT A LINE\n")
    data = {"services": {"web": {"image": "x", "env_file": "a.env"}}}
    message = error(data, base_dir=tmp_path)
    assert message == f"{tmp_path / 'a.env'}:2: invalid line in env file: 'NOT A LINE'"


def test_x_keys_in_top_level_sections_are_skipped():
    data = {"services": {}, "networks": {"x-note": "anything"}, "volumes": {"v": None}}
    project = normalize(loaded(data))
    assert set(project.networks) == set() and set(project.volumes) == {"v"}
