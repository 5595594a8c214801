"""BridgeDriver logic that needs no kernel: modes, validation order, saved state."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from agent.containers.network import NetworkDriver
from api import engine_pb2, errors
from overlay.bridge import Attachment, BridgeDriver, Endpoint, NetworkMode, parse_mode
from overlay.nft import PortSpec, Proto

pytestmark = pytest.mark.unit

CID = "0123456789abcdef" * 4


def saved(tmp_path: Path, *endpoints: Endpoint) -> Path:
    state = {"version": 1, "endpoints": {ep.container_id: ep.to_json() for ep in endpoints}}
    (tmp_path / "bridge.json").write_text(json.dumps(state))
    return tmp_path


WEB = Endpoint(
    CID,
    NetworkMode.BRIDGE,
    netns="pyswarm-0123456789ab",
    ip=IPv4Address("172.30.0.7"),
    veth="vps0123456789a",
    ports=(PortSpec("", 8080, 80, Proto.TCP),),
)


def test_driver_is_a_network_driver(tmp_path: Path) -> None:
    driver: NetworkDriver = BridgeDriver(state_dir=tmp_path)
    assert driver is not None


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("", "bridge"),
        ("default", "bridge"),
        ("bridge", "bridge"),
        ("host", "host"),
        ("none", "none"),
    ],
)
def test_builtin_modes(mode: str, expected: str) -> None:
    assert parse_mode(mode) == NetworkMode(expected)


def test_unknown_mode_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidArgument) as raised:
        BridgeDriver(state_dir=tmp_path).attach(CID, mode="overlay1", ports=[])
    assert raised.value.message == "network overlay1 not found"


def test_host_mode_makes_nothing_and_ignores_ports(tmp_path: Path) -> None:
    ports = [engine_pb2.PortBinding(host_port=8080, container_port=80)]
    attachment = BridgeDriver(state_dir=tmp_path).attach(CID, mode="host", ports=ports)

    assert attachment == Attachment(netns_path=None, ip_address="", gateway="", ports=())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad_id", ["", "web", "0123456789a", "0123456789ABCDEF", "../../etc1234"])
def test_container_id_must_be_hex(tmp_path: Path, bad_id: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        BridgeDriver(state_dir=tmp_path).attach(bad_id, mode="none", ports=[])


def test_bad_port_is_refused_before_any_kernel_work(tmp_path: Path) -> None:
    ports = [engine_pb2.PortBinding(host_port=8080, container_port=80, protocol="icmp")]
    with pytest.raises(errors.InvalidArgument, match="Invalid proto: icmp"):
        BridgeDriver(state_dir=tmp_path).attach(CID, mode="bridge", ports=ports)


def test_attaching_twice_is_a_conflict(tmp_path: Path) -> None:
    driver = BridgeDriver(state_dir=saved(tmp_path, WEB))
    with pytest.raises(errors.Conflict, match="container 0123456789ab already has a network"):
        driver.attach(CID, mode="bridge", ports=[])


def test_saved_state_is_read_back(tmp_path: Path) -> None:
    driver = BridgeDriver(state_dir=saved(tmp_path, WEB))

    assert driver.attachment(CID) == Attachment(
        netns_path="/run/netns/pyswarm-0123456789ab",
        ip_address="172.30.0.7",
        gateway="172.30.0.1",
        ports=(engine_pb2.PortBinding(host_port=8080, container_port=80, protocol="tcp"),),
    )
    assert driver.attachment("f" * 64) is None


def test_endpoint_round_trips_through_json() -> None:
    none = Endpoint(CID, NetworkMode.NONE, netns="pyswarm-0123456789ab")
    for endpoint in (WEB, none):
        assert Endpoint.from_json(CID, json.loads(json.dumps(endpoint.to_json()))) == endpoint


def test_detach_of_an_unknown_container_is_a_no_op(tmp_path: Path) -> None:
    BridgeDriver(state_dir=tmp_path).detach(CID)
    assert list(tmp_path.iterdir()) == []


def test_closed_driver_refuses_to_attach(tmp_path: Path) -> None:
    driver = BridgeDriver(state_dir=tmp_path)
    driver.close()
    with pytest.raises(errors.Unavailable):
        driver.attach(CID, mode="none", ports=[])


@pytest.mark.parametrize("content", ["{not json", '{"version": 99, "endpoints": {}}'])
def test_unreadable_state_is_an_engine_failure(tmp_path: Path, content: str) -> None:
    (tmp_path / "bridge.json").write_text(content)
    with pytest.raises(errors.EngineFailure, match="network state"):
        BridgeDriver(state_dir=tmp_path)


def test_id_whose_short_names_clash_with_another_is_a_conflict(tmp_path: Path) -> None:
    driver = BridgeDriver(state_dir=saved(tmp_path, WEB))
    twin = CID[:11] + "f" + CID[12:]  # same veth name (11 digits), other namespace name

    with pytest.raises(errors.Conflict, match="network names clash with container 0123456789ab"):
        driver.attach(twin, mode="bridge", ports=[])
