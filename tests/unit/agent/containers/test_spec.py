from typing import Any

import pytest

from agent.containers import spec

pytestmark = pytest.mark.unit


def _spec(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        process=spec.ProcessSpec(args=["sh"], env=["PATH=/bin"]),
        hostname="h",
        cgroups_path="/pyswarm/x",
        netns_path="/run/netns/x",
    )
    base.update(kw)
    return spec.build_spec(spec.ContainerSpec(**base))


def test_default_capabilities_are_dockers_fourteen():
    caps = _spec()["process"]["capabilities"]["bounding"]
    assert sorted(caps) == sorted(spec.DEFAULT_CAPS)
    assert "CAP_SYS_ADMIN" not in caps and "CAP_NET_ADMIN" not in caps


def test_cap_add_drop_follow_docker_rules():
    assert "CAP_NET_ADMIN" in spec.capabilities(add=["net_admin"])
    assert "CAP_CHOWN" not in spec.capabilities(drop=["CHOWN"])
    assert spec.capabilities(drop=["ALL"], add=["KILL"]) == ["CAP_KILL"]
    assert set(spec.capabilities(add=["ALL"])) == set(spec.ALL_CAPS)
    with pytest.raises(spec.CapabilityError):
        spec.capabilities(add=["NOT_A_CAP"])


def test_masked_and_readonly_proc_paths_and_minimal_dev():
    config = _spec()
    assert "/proc/kcore" in config["linux"]["maskedPaths"]
    assert "/proc/sys" in config["linux"]["readonlyPaths"]
    dev = next(m for m in config["mounts"] if m["destination"] == "/dev")
    assert dev["type"] == "tmpfs"
    devices = config["linux"]["resources"]["devices"]
    assert devices[0] == {"allow": False, "access": "rwm"}


def test_limits_become_cgroup_resources():
    config = _spec(
        limits=spec.Limits(memory_bytes=64 << 20, nano_cpus=1_500_000_000, pids_limit=20)
    )
    res = config["linux"]["resources"]
    assert res["memory"]["limit"] == 64 << 20
    assert res["cpu"] == {"quota": 150_000, "period": 100_000}
    assert res["pids"] == {"limit": 20}


def test_no_limits_means_no_resource_entries():
    res = _spec()["linux"]["resources"]
    assert set(res) == {"devices"}


def test_host_network_shares_the_namespace():
    kinds = [n["type"] for n in _spec(netns_path=None)["linux"]["namespaces"]]
    assert "network" not in kinds
    joined = _spec()["linux"]["namespaces"][-1]
    assert joined == {"type": "network", "path": "/run/netns/x"}


def test_read_only_root_and_mounts():
    config = _spec(
        read_only=True,
        mounts=[
            spec.SpecMount(destination="/data", type="bind", source="/srv", options=("ro",)),
            spec.SpecMount(destination="/scratch", type="tmpfs", options=("size=1024",)),
        ],
    )
    assert config["root"] == {"path": "rootfs", "readonly": True}
    data = next(m for m in config["mounts"] if m["destination"] == "/data")
    assert data["source"] == "/srv" and "ro" in data["options"]
    scratch = next(m for m in config["mounts"] if m["destination"] == "/scratch")
    assert scratch["type"] == "tmpfs" and "size=1024" in scratch["options"]


def test_env_merge_user_wins_and_path_defaults():
    env = spec.merge_env(["A=1", "B=2"], ["B=3", "C=4"], hostname="web")
    assert "B=3" in env and "A=1" in env and "C=4" in env and "B=2" not in env
    assert f"PATH={spec.DEFAULT_PATH}" in env and "HOSTNAME=web" in env
    assert "PATH=/x" in spec.merge_env(["PATH=/x"], [], hostname="h")


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        (
            dict(
                image_entrypoint=[], image_cmd=["sh"], entrypoint=[], entrypoint_set=False, cmd=[]
            ),
            ["sh"],
        ),
        (
            dict(
                image_entrypoint=[],
                image_cmd=["sh"],
                entrypoint=[],
                entrypoint_set=False,
                cmd=["ls"],
            ),
            ["ls"],
        ),
        (
            dict(
                image_entrypoint=["ep"],
                image_cmd=["a"],
                entrypoint=[],
                entrypoint_set=False,
                cmd=[],
            ),
            ["ep", "a"],
        ),
        (
            dict(
                image_entrypoint=["ep"],
                image_cmd=["a"],
                entrypoint=["x"],
                entrypoint_set=True,
                cmd=[],
            ),
            ["x"],
        ),
        (
            dict(
                image_entrypoint=["ep"],
                image_cmd=["a"],
                entrypoint=[""],
                entrypoint_set=True,
                cmd=["b"],
            ),
            ["b"],
        ),
    ],
)
def test_command_line_follows_docker(kw, expected):
    assert spec.command_line(**kw) == expected
