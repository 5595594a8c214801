"""The compose project as swarm objects: names, labels, aliases, ports, the change hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.compose import convert, model
from cli.compose.load import load
from cli.compose.normalize import normalize

pytestmark = pytest.mark.unit

STACK = """\
services:
  web:
    image: busybox
    command: ["httpd", "-f"]
    ports: ["8080:80"]
    networks:
      front:
        aliases: [www]
    depends_on: [api]
    deploy:
      replicas: 3
      update_config: {parallelism: 2, order: start-first}
  api:
    image: busybox
    networks: [front]
    secrets: [token]
networks:
  front: {}
secrets:
  token: {file: ./token.txt}
"""


def project(tmp_path: Path, text: str = STACK) -> model.Project:
    (tmp_path / "token.txt").write_text("t")
    (tmp_path / "stack.yml").write_text(text)
    return normalize(load([str(tmp_path / "stack.yml")], environ={}))


def test_names_labels_aliases_and_ports(tmp_path: Path) -> None:
    p = project(tmp_path)
    spec = convert.service_spec("demo", p.services["web"], p, image="busybox")
    assert spec.name == "demo_web" and spec.replicas == 3
    assert spec.labels[convert.NAMESPACE_LABEL] == "demo"
    assert spec.task.container.args == ["httpd", "-f"]
    (attachment,) = spec.task.networks
    assert attachment.target == "demo_front" and list(attachment.aliases) == ["web", "www"]
    (port,) = spec.endpoint.ports
    assert (port.published_port, port.target_port, port.publish_mode) == (8080, 80, "ingress")
    assert spec.update.parallelism == 2 and spec.update.order == 1
    api = convert.service_spec("demo", p.services["api"], p, image="busybox")
    assert [r.name for r in api.task.container.secrets] == ["demo_token"]
    network = convert.network_spec("demo", p.networks["front"])
    assert network.name == "demo_front" and network.labels[convert.NAMESPACE_LABEL] == "demo"


def test_the_hash_changes_only_with_the_spec(tmp_path: Path) -> None:
    p = project(tmp_path)
    first = convert.service_spec("demo", p.services["web"], p, image="busybox")
    again = convert.service_spec("demo", p.services["web"], p, image="busybox")
    assert first.labels[convert.HASH_LABEL] == again.labels[convert.HASH_LABEL]
    changed = project(tmp_path, STACK.replace("replicas: 3", "replicas: 4"))
    other = convert.service_spec("demo", changed.services["web"], changed, image="busybox")
    assert other.labels[convert.HASH_LABEL] != first.labels[convert.HASH_LABEL]


def test_dependencies_deploy_first(tmp_path: Path) -> None:
    p = project(tmp_path)
    assert convert.deploy_order(p.services) == ["api", "web"]
