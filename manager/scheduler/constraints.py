"""Docker's placement constraints (`--constraint node.labels.zone==a`) and preferences.

A constraint is `KEY OP VALUE` with OP one of `==`, `!=`; values compare ignoring case,
as swarmkit's do. A node without the label a `node.labels.X` constraint names has the
value "" there, so `node.labels.zone!=a` matches it and `node.labels.zone==a` does not.
Parsing happens twice: once by the control API at service create (`validate_placement`,
so a typo is an error for the user, not a forever-pending task), and again by the
scheduler, which trusts nothing it reads from the store.

Usage::

    c = parse_constraint("node.role == manager")
    c.matches(node)  # True on managers
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from api import objects_pb2 as objects
from api.errors import InvalidArgument

LABEL_PREFIX: Final = "node.labels."
# swarmkit's character sets (manager/constraint/constraint.go), so that what docker
# accepts we accept, and what it refuses we refuse with the same words.
_KEY: Final = re.compile(r"^[a-z_][a-z0-9\-_.]+$", re.IGNORECASE)
_VALUE: Final = re.compile(r"^[a-z0-9:\-_\s.*()?+\[\]\\^$|/]+$", re.IGNORECASE)
_KEYS: Final = frozenset(
    {"node.id", "node.hostname", "node.role", "node.ip", "node.platform.os", "node.platform.arch"}
)
_ROLES: Final = {"manager": objects.MANAGER, "worker": objects.WORKER}
# Engines report `uname -m`, images say GOARCH: both spellings name one architecture.
_ARCH_ALIASES: Final = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


class Operator(StrEnum):
    EQ = "=="
    NE = "!="


@dataclass(frozen=True)
class Constraint:
    """One parsed constraint; `key` is lowercased except for a label's name."""

    key: str
    operator: Operator
    value: str

    def matches(self, node: objects.Node) -> bool:
        if self.key == "node.ip":
            return self._matches_ip(node.status.addr)
        return self._compare(_node_value(node, self.key))

    def _compare(self, actual: str) -> bool:
        wanted = self.value
        if self.key == "node.platform.arch":
            actual, wanted = _arch(actual), _arch(wanted)
        equal = actual.lower() == wanted.lower()
        return equal if self.operator is Operator.EQ else not equal

    def _matches_ip(self, addr: str) -> bool:
        ip = _parse_ip(addr)
        if ip is None:
            return False  # as swarmkit: a node without a known address matches neither
        try:
            inside = ip in ipaddress.ip_network(self.value, strict=False)
        except ValueError:
            return False
        return inside if self.operator is Operator.EQ else not inside

    def __str__(self) -> str:
        return f"{self.key}{self.operator}{self.value}"


def parse_constraint(expr: str) -> Constraint:
    """Parse `KEY==VALUE` / `KEY!=VALUE`; InvalidArgument with docker's words if bad."""
    for op in Operator:  # "==" first, as swarmkit: "a!==b" is key "a!", refused below
        if op in expr:
            raw_key, raw_value = (part.strip() for part in expr.split(op, 1))
            break
    else:
        raise InvalidArgument("constraint expected one operator from ==, !=")
    if not _KEY.match(raw_key):
        raise InvalidArgument(f"key '{raw_key}' is invalid")
    if not _VALUE.match(raw_value):
        raise InvalidArgument(f"value '{raw_value}' is invalid")
    return Constraint(_canonical_key(raw_key), op, _checked_value(raw_key, raw_value))


def parse_constraints(exprs: Iterable[str]) -> list[Constraint]:
    return [parse_constraint(e) for e in exprs]


def validate_placement(placement: objects.Placement) -> None:
    """What the control API checks at service create/update: every constraint parses
    and every preference is a `node.labels.<name>` spread descriptor."""
    parse_constraints(placement.constraints)
    for pref in placement.preferences:
        label_name(pref)


def label_name(descriptor: str) -> str:
    """The label a spread preference (`node.labels.zone`) splits nodes by."""
    if not descriptor.lower().startswith(LABEL_PREFIX) or len(descriptor) <= len(LABEL_PREFIX):
        raise InvalidArgument(
            f"invalid placement preference: {descriptor!r} is not node.labels.<name>"
        )
    return descriptor[len(LABEL_PREFIX) :]


def _canonical_key(raw: str) -> str:
    lowered = raw.lower()
    if lowered.startswith(LABEL_PREFIX) and len(raw) > len(LABEL_PREFIX):
        return LABEL_PREFIX + raw[len(LABEL_PREFIX) :]  # label names keep their case
    if lowered in _KEYS:
        return lowered
    raise InvalidArgument(f"invalid constraint key: {raw}")


def _checked_value(raw_key: str, value: str) -> str:
    # Refused here rather than matched never: a role typo would leave tasks pending.
    if raw_key.lower() == "node.role" and value.lower() not in _ROLES:
        raise InvalidArgument(f"invalid role in constraint: {value} (manager or worker)")
    if raw_key.lower() == "node.ip":
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise InvalidArgument(f"invalid IP address or subnet in constraint: {value}") from None
    return value


def _node_value(node: objects.Node, key: str) -> str:
    if key.startswith(LABEL_PREFIX):
        return node.spec.labels.get(key[len(LABEL_PREFIX) :], "")
    if key == "node.id":
        return node.meta.id
    if key == "node.hostname":
        return node.description.hostname
    if key == "node.role":
        return "manager" if node.role == objects.MANAGER else "worker"
    if key == "node.platform.os":
        return node.description.os
    if key == "node.platform.arch":
        return node.description.arch
    return ""  # unreachable for a parsed constraint


def _arch(value: str) -> str:
    lowered = value.lower()
    return _ARCH_ALIASES.get(lowered, lowered)


def _parse_ip(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    host = addr
    if addr.startswith("["):  # [v6]:port
        host = addr[1:].split("]", 1)[0]
    elif addr.count(":") == 1:  # v4:port
        host = addr.split(":", 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
