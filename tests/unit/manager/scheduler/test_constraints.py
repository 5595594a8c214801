"""Placement constraints and preferences: parsing, docker's error words, matching."""

from __future__ import annotations

import pytest

from api import objects_pb2 as objects
from api.errors import InvalidArgument
from manager.scheduler import parse_constraint, parse_constraints, validate_placement

from .harness import node

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("node.role>worker", "constraint expected one operator from ==, !="),
        ("node.role", "constraint expected one operator from ==, !="),
        ("node.foo==bar", "invalid constraint key: node.foo"),
        ("engine.labels.x==y", "invalid constraint key: engine.labels.x"),
        ("node.labels.==a", "invalid constraint key: node.labels."),
        ("==worker", "key '' is invalid"),
        ("node.role==", "value '' is invalid"),
        ("node.role!==worker", "key 'node.role!' is invalid"),
        ("node.hostname==a==b", "value 'a==b' is invalid"),
        ("node.role==boss", "invalid role in constraint: boss (manager or worker)"),
        ("node.ip==nope", "invalid IP address or subnet in constraint: nope"),
    ],
)
def test_bad_constraints_are_refused_in_dockers_words(expr: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_constraint(expr)
    assert info.value.message == message


def test_whitespace_around_tokens_is_allowed() -> None:
    c = parse_constraint("  node.role ==  manager ")
    assert (c.key, c.operator, c.value) == ("node.role", "==", "manager")
    assert str(c) == "node.role==manager"


def test_keys_ignore_case_but_label_names_keep_theirs() -> None:
    assert parse_constraint("Node.Role==worker").key == "node.role"
    assert parse_constraint("NODE.LABELS.Zone==a").key == "node.labels.Zone"


def test_labels_compare_values_ignoring_case_and_missing_is_empty() -> None:
    a = node("n1", labels={"zone": "A"})
    bare = node("n2")
    assert parse_constraint("node.labels.zone==a").matches(a)
    assert not parse_constraint("node.labels.zone==a").matches(bare)
    assert parse_constraint("node.labels.zone!=a").matches(bare)
    assert not parse_constraint("node.labels.zone!=a").matches(a)
    # Label names are case sensitive, as in docker.
    assert not parse_constraint("node.labels.Zone==a").matches(a)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("node.id==n1", True),
        ("node.id!=n1", False),
        ("node.hostname==alpha", True),
        ("node.hostname==ALPHA", True),
        ("node.role==manager", True),
        ("node.role==worker", False),
        ("node.role!=worker", True),
        ("node.platform.os==linux", True),
        ("node.platform.os!=linux", False),
        ("node.platform.arch==amd64", True),
        ("node.platform.arch==x86_64", True),
        ("node.platform.arch==arm64", False),
        ("node.ip==198.18.0.5", True),
        ("node.ip==198.18.0.0/16", True),
        ("node.ip!=198.18.0.0/16", False),
        ("node.ip==10.0.0.0/8", False),
    ],
)
def test_node_keys(expr: str, expected: bool) -> None:
    n = node("n1", hostname="alpha", role=objects.MANAGER, arch="x86_64", addr="198.18.0.5:2377")
    assert parse_constraint(expr).matches(n) is expected


def test_arch_aliases_work_both_ways() -> None:
    assert parse_constraint("node.platform.arch==x86_64").matches(node("n", arch="amd64"))
    assert parse_constraint("node.platform.arch==arm64").matches(node("n", arch="aarch64"))


def test_parse_constraints_parses_each() -> None:
    parsed = parse_constraints(["node.role==worker", "node.labels.a!=b"])
    assert [str(c) for c in parsed] == ["node.role==worker", "node.labels.a!=b"]


def test_validate_placement_checks_constraints_and_preferences() -> None:
    validate_placement(
        objects.Placement(constraints=["node.role==worker"], preferences=["node.labels.zone"])
    )
    with pytest.raises(InvalidArgument, match="constraint expected one operator"):
        validate_placement(objects.Placement(constraints=["node.role=worker"]))
    with pytest.raises(InvalidArgument, match="invalid placement preference"):
        validate_placement(objects.Placement(preferences=["engine.labels.zone"]))
    with pytest.raises(InvalidArgument, match="invalid placement preference"):
        validate_placement(objects.Placement(preferences=["node.labels."]))
