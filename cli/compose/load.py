"""Reading compose files safely: YAML, `.env`, interpolation and the multi-file merge.

`load(files, environ=...)` reads each `-c` file (`-` is stdin), parses it, interpolates its
string values and merges the files in order into one plain document (`Loaded.data`), with the
line every key was written on (`Loaded.positions`, by key path) so later stages can report
`file:line: key.path: message` (`where`, `ComposeError`).

Safety. A file over 1 MiB is refused before parsing. The YAML is composed by a `SafeLoader`
subclass that refuses nesting deeper than 64 while composing (the composer recurses, so a
megabyte of `[` would otherwise exhaust the stack); the node graph is then turned into Python
values by our own walk, not PyYAML's constructor, so that it can: refuse duplicate keys with
their line; expand aliases while counting -- every node produced inside an alias expansion
counts, over 10,000 such nodes or 100,000 nodes in all is "too many aliases (a YAML bomb?)",
so the billion laughs stops after a few thousand steps; refuse recursive aliases through the
depth bound; apply `<<` merge keys (explicit keys win, earlier merge sources win); refuse
tags other than the core scalar ones and `!reset` / `!override`. Booleans are YAML 1.2's
(`true`/`false` only: `yes`, `on` stay strings, as in the Compose Spec's parser) and
timestamps stay strings; mapping keys are kept as written (strings).

Interpolation (Compose Spec "Interpolation") runs on every string value -- never on keys --
per file, before the merge: `$VAR`, `${VAR}`, `${VAR:-d}`, `${VAR-d}`, `${VAR:?msg}`,
`${VAR?msg}`, `${VAR:+alt}`, `${VAR+alt}`, `$$` for `$`; the operand is itself interpolated,
only when it is used. A `$` not followed by a name or `{` stays as written. An unset variable
without a default becomes "" with docker's warning (once per variable). Top-level `x-` keys
are not interpolated (they are dropped; what aliases copy out of them is interpolated where
it lands). The variables are the `.env` file beside the first compose file (`KEY=VALUE`,
`# comments`, `export ` prefix, single quotes literal, double quotes with `\\n \\t \\" \\\\`
escapes, ` #` comments after unquoted values; no expansion inside `.env`) overridden by the
real environment.

Merge (Compose Spec "Merge"): mappings merge recursively, the later scalar wins, a type
change (scalar vs mapping vs sequence) lets the later value win. Sequences are appended,
dropping items equal to one already there, except:
- `command`, `entrypoint`, `healthcheck.test` (anywhere under a service): replaced;
- `ports` unique by (host ip, published, target, protocol), `volumes` by target, `secrets`
  and `configs` by target (else source): a later item with the same key replaces the
  earlier one in place;
- `environment`, `labels` (and `args`) given as lists are turned into mappings first
  (`K=V` -> {K: V}, `K` -> {K: None}) when the two sides differ in shape or are both lists,
  and merged as mappings (so the result is a mapping);
- service `networks` and `depends_on` given as a list on one side and a mapping on the
  other: the list becomes a mapping ({name: None} / {name: {condition: service_started}});
- the tags `!reset` (remove the value) and `!override` (replace instead of merge) work.
`version:` is accepted and dropped; `x-` keys are dropped at the top level and directly
inside each entry of the top-level sections (services.web.x-foo, networks.n.x-foo).
Relative paths are left as written; they resolve against `Loaded.base_dir`, the first file's
directory (the cwd for stdin), as the spec says.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_ALIAS_NODES = 10_000
MAX_TOTAL_NODES = 100_000
MAX_INTERPOLATION_DEPTH = 16
STDIN_NAME = "<stdin>"

KeyPath = tuple[str | int, ...]


class ComposeError(Exception):
    """One line: `file:line: key.path: message`, file/line and path when known."""

    def __init__(self, message: str, *, file: str = "", line: int = 0, path: KeyPath = ()) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.path = path
        parts = []
        if file:
            parts.append(f"{file}:{line}" if line else file)
        if path:
            parts.append(".".join(str(p) for p in path))
        parts.append(message)
        super().__init__(": ".join(parts))


@dataclass(frozen=True)
class Pos:
    file: str
    line: int  # 1-based


@dataclass
class Loaded:
    data: dict[str, Any]
    positions: dict[KeyPath, Pos]
    base_dir: Path
    environ: dict[str, str]
    warnings: list[str] = field(default_factory=list)


def where(loaded: Loaded, path: KeyPath) -> str:
    """`file:line` of `path` or of its nearest ancestor with a known position, else ""."""
    for n in range(len(path), 0, -1):
        pos = loaded.positions.get(tuple(path[:n]))
        if pos is not None:
            return f"{pos.file}:{pos.line}"
    return ""


# --- intermediate values: containers that carry the position of each entry -------------


class _PDict(dict[str, Any]):
    pos: dict[str, Pos]

    def __init__(self) -> None:
        super().__init__()
        self.pos = {}


class _PList(list[Any]):
    pos: list[Pos | None]

    def __init__(self) -> None:
        super().__init__()
        self.pos = []

    def add(self, value: Any, pos: Pos | None) -> None:
        self.append(value)
        self.pos.append(pos)


class _Reset:
    """`!reset`: the key is removed (by the merge, or at the end)."""


@dataclass
class _Override:
    """`!override`: the value replaces what earlier files said instead of merging."""

    value: Any


# --- YAML ---------------------------------------------------------------------------------

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}


# YAML 1.1 without its surprises (as the Compose Spec's YAML 1.2 parser reads them): only
# true/false are booleans, `8080:80` is not a base-60 number, dates stay strings.
_REPLACED_RESOLVERS = {
    _TAG + "bool": ("tTfF", r"^(?:true|True|TRUE|false|False|FALSE)$"),
    _TAG + "int": (
        "-+0123456789",
        r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$",
    ),
    _TAG + "float": (
        "-+0123456789.",
        r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
    ),
    _TAG + "timestamp": ("", ""),
}


def _resolvers() -> dict[Any, list[tuple[str, re.Pattern[str]]]]:
    out: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}
    for first, items in yaml.SafeLoader.yaml_implicit_resolvers.items():
        kept = [(t, r) for t, r in items if t not in _REPLACED_RESOLVERS]
        if kept:
            out[first] = kept
    for tag, (firsts, pattern) in _REPLACED_RESOLVERS.items():
        for first in firsts:
            out.setdefault(first, []).append((tag, re.compile(pattern)))
    return out


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans, no timestamps, and a depth bound while composing."""

    yaml_implicit_resolvers = _resolvers()

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        if self.flow_level >= MAX_DEPTH:  # stop `[[[[...` while scanning, not after
            raise ComposeError(f"nesting deeper than {MAX_DEPTH}", line=self.line + 1)
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise ComposeError(f"nesting deeper than {MAX_DEPTH}", line=mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Interp:
    """Interpolation of one string against the environment (warnings collected)."""

    _NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

    def __init__(self, env: Mapping[str, str], warnings: list[str]) -> None:
        self.env = env
        self.warnings = warnings
        self._warned: set[str] = set()

    def __call__(self, text: str) -> str:
        if "$" not in text:
            return text
        return self._run(text, 0)

    def _unset(self, name: str) -> str:
        if name not in self._warned:
            self._warned.add(name)
            self.warnings.append(f'The "{name}" variable is not set. Defaulting to a blank string.')
        return ""

    def _run(self, s: str, depth: int) -> str:
        """Interpolate s (an operand at nesting `depth`)."""
        if depth > MAX_INTERPOLATION_DEPTH:
            raise ValueError(f"interpolation nested too deeply in {s!r}")
        out: list[str] = []
        n = len(s)
        i = 0
        while i < n:
            c = s[i]
            if c != "$":
                j = s.find("$", i)
                stop = n if j < 0 else j
                out.append(s[i:stop])
                i = stop
                continue
            nxt = s[i + 1] if i + 1 < n else ""
            if nxt == "$":
                out.append("$")
                i += 2
            elif nxt == "{":
                value, i = self._braced(s, i + 2, depth)
                out.append(value)
            else:
                m = self._NAME.match(s, i + 1)
                if m is None:
                    out.append("$")
                    i += 1
                else:
                    name = m.group()
                    value_or_none = self.env.get(name)
                    out.append(value_or_none if value_or_none is not None else self._unset(name))
                    i = m.end()
        return "".join(out)

    def _skip(self, s: str, i: int) -> int:
        """Index of the `}` closing an operand starting at i, without evaluating it."""
        level = 0
        n = len(s)
        while i < n:
            c = s[i]
            if c == "$" and i + 1 < n and s[i + 1] in "${":
                if s[i + 1] == "{":
                    level += 1
                i += 2
                continue
            if c == "}":
                if level == 0:
                    return i
                level -= 1
            i += 1
        raise ValueError(f"invalid interpolation format for {s!r}: missing '}}'")

    def _braced(self, s: str, i: int, depth: int) -> tuple[str, int]:
        m = self._NAME.match(s, i)
        if m is None:
            raise ValueError(f"invalid interpolation format for {s!r}")
        name = m.group()
        i = m.end()
        if i < len(s) and s[i] == "}":
            value = self.env.get(name)
            return (value if value is not None else self._unset(name)), i + 1
        for op in (":-", ":?", ":+", "-", "?", "+"):
            if s.startswith(op, i):
                break
        else:
            raise ValueError(f"invalid interpolation format for {s!r}")
        start = i + len(op)
        end = self._skip(s, start)
        value = self.env.get(name)
        colon = op.startswith(":")
        present = value is not None and (value != "" or not colon)
        kind = op[-1]

        def operand() -> str:
            return self._run(s[start:end], depth + 1)

        if kind == "-":
            return (value if present and value is not None else operand()), end + 1
        if kind == "+":
            return (operand() if present else ""), end + 1
        if present and value is not None:
            return value, end + 1
        raise _Required(name, operand())


class _Required(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(name, message)
        self.name = name
        self.message = message


class _Walker:
    """Turns one file's node graph into `_PDict`/`_PList` values, safely (see module doc)."""

    def __init__(self, loader: _Loader, file: str, interp: _Interp) -> None:
        self.loader = loader
        self.file = file
        self.interp = interp
        self.seen: set[int] = set()
        self.total = 0
        self.aliased = 0

    def error(self, message: str, node: Node, path: KeyPath) -> ComposeError:
        return ComposeError(message, file=self.file, line=node.start_mark.line + 1, path=path)

    def pos(self, node: Node) -> Pos:
        return Pos(self.file, node.start_mark.line + 1)

    def walk(self, node: Node, path: KeyPath, depth: int, in_alias: bool) -> Any:
        if depth > MAX_DEPTH:
            raise self.error(f"nesting deeper than {MAX_DEPTH} (a recursive alias?)", node, path)
        if id(node) in self.seen:
            in_alias = True
        else:
            self.seen.add(id(node))
        self.total += 1
        if in_alias:
            self.aliased += 1
        if self.aliased > MAX_ALIAS_NODES or self.total > MAX_TOTAL_NODES:
            raise self.error("too many aliases (a YAML bomb?)", node, path)
        tag = node.tag
        if tag == "!reset":
            return _Reset()
        if tag == "!override":
            node = _retag(node, self.loader)
            return _Override(self.walk(node, path, depth, in_alias))
        if isinstance(node, ScalarNode):
            if tag not in _SCALAR_TAGS:
                raise self.error(f"unsupported tag {tag}", node, path)
            value = self.loader.construct_object(node)
            if isinstance(value, str):
                try:
                    return self.interp(value)
                except _Required as e:
                    raise self.error(
                        f"required variable {e.name} is missing a value: {e.message}", node, path
                    ) from None
                except ValueError as e:
                    raise self.error(str(e), node, path) from None
            return value
        if isinstance(node, SequenceNode):
            if tag != _TAG + "seq":
                raise self.error(f"unsupported tag {tag}", node, path)
            out = _PList()
            for index, item in enumerate(node.value):
                out.add(self.walk(item, (*path, index), depth + 1, in_alias), self.pos(item))
            return out
        if isinstance(node, MappingNode):
            if tag != _TAG + "map":
                raise self.error(f"unsupported tag {tag}", node, path)
            return self.mapping(node, path, depth, in_alias)
        raise self.error("unsupported YAML node", node, path)  # pragma: no cover

    def mapping(self, node: MappingNode, path: KeyPath, depth: int, in_alias: bool) -> _PDict:
        out = _PDict()
        merged = _PDict()  # keys from `<<`, earlier sources first-win
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                for source in _merge_sources(value_node):
                    if not isinstance(source, MappingNode):
                        raise self.error("merge key '<<' needs mappings", value_node, path)
                    sub = self.walk(source, path, depth + 1, in_alias)
                    for k, v in sub.items():
                        if k not in merged:
                            merged[k] = v
                            merged.pos[k] = sub.pos[k]
                continue
            if not isinstance(key_node, ScalarNode):
                raise self.error("mapping keys must be scalars", key_node, path)
            key = str(key_node.value)
            if key in out:
                raise self.error(f"duplicate key {key!r}", key_node, path)
            if depth == 0 and key.startswith("x-"):
                out[key] = None  # dropped later; its anchors already did their work
            else:
                out[key] = self.walk(value_node, (*path, key), depth + 1, in_alias)
            out.pos[key] = self.pos(key_node)
        for k, v in merged.items():
            if k not in out:
                out[k] = v
                out.pos[k] = merged.pos[k]
        return out


def _merge_sources(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    return [node]


def _retag(node: Node, loader: _Loader) -> Node:
    """The node as if it had no explicit tag (for `!override`)."""
    if isinstance(node, ScalarNode):
        tag = loader.resolve(ScalarNode, node.value, (True, False))  # type: ignore[no-untyped-call]
        return ScalarNode(tag, node.value, node.start_mark, node.end_mark, node.style)
    if isinstance(node, SequenceNode):
        return SequenceNode(_TAG + "seq", node.value, node.start_mark, node.end_mark)
    return MappingNode(_TAG + "map", node.value, node.start_mark, node.end_mark)


# --- reading ------------------------------------------------------------------------------


def _read(name: str, stdin: IO[str] | None) -> tuple[str, str]:
    """(display name, text) of one file, size-capped."""
    if name == "-":
        if stdin is None:
            raise ComposeError("no stdin to read the compose file from", file=STDIN_NAME)
        text = stdin.read(MAX_FILE_BYTES + 1)
        if len(text.encode()) > MAX_FILE_BYTES:
            raise ComposeError(f"file too large (over {MAX_FILE_BYTES} bytes)", file=STDIN_NAME)
        return STDIN_NAME, text
    try:
        with open(name, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ComposeError(e.strerror or str(e), file=name) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ComposeError(f"file too large (over {MAX_FILE_BYTES} bytes)", file=name)
    try:
        return name, raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ComposeError("not UTF-8 text", file=name) from None


def _parse(file: str, text: str, interp: _Interp) -> _PDict:
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = mark.line + 1 if mark is not None else 0
            raise ComposeError(
                f"invalid YAML: {e.problem or e.context or 'syntax error'}", file=file, line=line
            ) from None
        except yaml.YAMLError as e:
            raise ComposeError(f"invalid YAML: {e}", file=file) from None
        except ComposeError as e:
            raise ComposeError(e.message, file=file, line=e.line) from None
        except RecursionError:
            raise ComposeError(f"nesting deeper than {MAX_DEPTH}", file=file) from None
        if node is None:
            raise ComposeError("empty compose file", file=file)
        if not isinstance(node, MappingNode) or node.tag != _TAG + "map":
            raise ComposeError(
                "top level must be a mapping", file=file, line=node.start_mark.line + 1
            )
        result = _Walker(loader, file, interp).walk(node, (), 0, False)
        assert isinstance(result, _PDict)
        return result
    finally:
        loader.dispose()


_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.\-]*)\s*=\s*(.*?)\s*$")
_DQ_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def parse_dotenv(text: str, file: str) -> dict[str, str]:
    """`KEY=VALUE` lines of a `.env` file (see module doc); bad lines are errors."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _ENV_LINE.match(line)
        if m is None:
            raise ComposeError(f"invalid line in env file: {stripped!r}", file=file, line=number)
        key, raw = m.group(1), m.group(2)
        if raw[:1] == "'":
            end = raw.find("'", 1)
            if end < 0:
                raise ComposeError("unterminated single quote", file=file, line=number)
            value = raw[1:end]
        elif raw[:1] == '"':
            chars: list[str] = []
            i = 1
            while i < len(raw) and raw[i] != '"':
                if raw[i] == "\\" and i + 1 < len(raw):
                    chars.append(_DQ_ESCAPES.get(raw[i + 1], "\\" + raw[i + 1]))
                    i += 2
                else:
                    chars.append(raw[i])
                    i += 1
            if i >= len(raw):
                raise ComposeError("unterminated double quote", file=file, line=number)
            value = "".join(chars)
        else:
            value = re.split(r"\s+#", raw, maxsplit=1)[0].rstrip()
        out[key] = value
    return out


def _dotenv(base_dir: Path) -> dict[str, str]:
    path = base_dir / ".env"
    if not path.is_file():
        return {}
    name, text = _read(str(path), None)
    return parse_dotenv(text, name)


# --- merge --------------------------------------------------------------------------------

_REPLACED = {"command", "entrypoint"}
_TO_MAP = {"environment", "labels", "args"}
_UNIQUE_SEQ = {"ports", "volumes", "secrets", "configs"}


def _list_to_map(items: _PList) -> _PDict:
    out = _PDict()
    for item, pos in zip(items, items.pos, strict=True):
        if isinstance(item, str):
            key, eq, value = item.partition("=")
            v: Any = value if eq else None
        elif isinstance(item, _PDict) and len(item) == 1:  # `- KEY: value`
            ((key, v),) = item.items()
        else:
            key, v = str(item), None
        out[key] = v
        if pos is not None:
            out.pos[key] = pos
    return out


def _started() -> _PDict:
    out = _PDict()
    out["condition"] = "service_started"
    return out


def _names_to_map(items: _PList, fill: Callable[[], _PDict] | None) -> _PDict:
    out = _PDict()
    for item, pos in zip(items, items.pos, strict=True):
        out[str(item)] = fill() if fill is not None else None
        if pos is not None:
            out.pos[str(item)] = pos
    return out


def _port_key(item: Any) -> Any:
    if isinstance(item, Mapping):
        return (
            str(item.get("host_ip") or ""),
            str(item.get("published") or ""),
            str(item.get("target")),
            str(item.get("protocol") or "tcp"),
        )
    text = str(item)
    text, _, proto = text.partition("/")
    parts = text.rsplit(":", 2)
    ip, published = "", ""
    if len(parts) == 3:
        ip, published, target = parts
    elif len(parts) == 2:
        published, target = parts
    else:
        target = parts[0]
    return (ip.strip("[]"), published, target, proto or "tcp")


def _unique_key(kind: str, item: Any) -> Any:
    if kind == "ports":
        return _port_key(item)
    if isinstance(item, Mapping):
        if kind == "volumes":
            return ("t", str(item.get("target")))
        return ("t", str(item.get("target") or item.get("source")))
    if kind == "volumes" and isinstance(item, str):
        parts = item.split(":")
        return ("t", parts[1] if len(parts) > 1 else parts[0])
    return ("t", str(item))


def _hashable(item: Any) -> Any:
    if isinstance(item, Mapping):
        return ("m", tuple((k, _hashable(v)) for k, v in item.items()))
    if isinstance(item, list):
        return ("l", tuple(_hashable(v) for v in item))
    return ("s", type(item).__name__, item)


def _merge_lists(base: _PList, over: _PList, kind: str | None) -> _PList:
    out = _PList()
    index: dict[Any, int] = {}
    for source in (base, over):
        for item, pos in zip(source, source.pos, strict=True):
            key = _unique_key(kind, item) if kind else _hashable(item)
            if key in index:
                if kind:  # unique resource: the later one replaces it in place
                    out[index[key]] = _finish_value(item)
                    out.pos[index[key]] = pos
                continue
            index[key] = len(out)
            out.add(_finish_value(item), pos)
    return out


def _in_service(path: KeyPath) -> bool:
    return len(path) >= 3 and path[0] == "services"


def _merge(base: Any, over: Any, path: KeyPath) -> Any:
    if isinstance(over, _Override):
        return _finish_value(over.value)
    last = path[-1] if path else None
    if _in_service(path) and (
        last in _REPLACED or (last == "test" and len(path) >= 2 and path[-2] == "healthcheck")
    ):
        return _finish_value(over)
    if last in _TO_MAP and (isinstance(base, _PList) or isinstance(over, _PList)):
        if isinstance(base, _PList) and isinstance(over, _PList | _PDict):
            base = _list_to_map(base)
        if isinstance(over, _PList) and isinstance(base, _PDict):
            over = _list_to_map(over)
    if len(path) == 3 and path[0] == "services" and last in ("networks", "depends_on"):
        fill = _started if last == "depends_on" else None
        if isinstance(base, _PList) and isinstance(over, _PDict):
            base = _names_to_map(base, fill)
        elif isinstance(base, _PDict) and isinstance(over, _PList):
            over = _names_to_map(over, fill)
    if isinstance(base, _PDict) and isinstance(over, _PDict):
        out = _PDict()
        for k, v in base.items():
            out[k] = v
            if k in base.pos:
                out.pos[k] = base.pos[k]
        for k, v in over.items():
            if isinstance(v, _Reset):
                out.pop(k, None)
                out.pos.pop(k, None)
                continue
            out[k] = _merge(out[k], v, (*path, k)) if k in out else _finish_value(v)
            if k in over.pos:
                out.pos[k] = over.pos[k]
        return out
    if isinstance(base, _PList) and isinstance(over, _PList):
        kind = str(last) if _in_service(path) and last in _UNIQUE_SEQ else None
        return _merge_lists(base, over, kind)
    return _finish_value(over)


def _finish_value(value: Any) -> Any:
    """Resolve `!reset`/`!override` markers inside a value that is not merged further."""
    if isinstance(value, _Override):
        return _finish_value(value.value)
    if isinstance(value, _PDict):
        out = _PDict()
        for k, v in value.items():
            if isinstance(v, _Reset):
                continue
            out[k] = _finish_value(v)
            if k in value.pos:
                out.pos[k] = value.pos[k]
        return out
    if isinstance(value, _PList):
        items = _PList()
        for v, p in zip(value, value.pos, strict=True):
            if not isinstance(v, _Reset):
                items.add(_finish_value(v), p)
        return items
    if isinstance(value, _Reset):
        return None
    return value


def _plain(value: Any, path: KeyPath, positions: dict[KeyPath, Pos]) -> Any:
    """Plain dict/list copy of the merged tree; records positions; drops x- and version."""
    if isinstance(value, _PDict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k.startswith("x-") and (len(path) == 0 or len(path) == 2):
                continue
            if not path and k == "version":
                continue
            sub = (*path, k)
            if k in value.pos:
                positions[sub] = value.pos[k]
            out[k] = _plain(v, sub, positions)
        return out
    if isinstance(value, _PList):
        items = []
        for i, (v, p) in enumerate(zip(value, value.pos, strict=True)):
            if p is not None:
                positions[(*path, i)] = p
            items.append(_plain(v, (*path, i), positions))
        return items
    return value


def load(
    files: Sequence[str], *, environ: Mapping[str, str], stdin: IO[str] | None = None
) -> Loaded:
    """Read, interpolate and merge the compose files (see module doc)."""
    if not files:
        raise ComposeError("no compose file given")
    if list(files).count("-") > 1:
        raise ComposeError("stdin ('-') can be given only once")
    first = files[0]
    base_dir = Path.cwd() if first == "-" else Path(os.path.abspath(first)).parent
    env = {**_dotenv(base_dir), **environ}
    warnings: list[str] = []
    interp = _Interp(env, warnings)
    merged: Any = None
    for name in files:
        display, text = _read(name, stdin)
        doc = _parse(display, text, interp)
        merged = _finish_value(doc) if merged is None else _merge(merged, doc, ())
    positions: dict[KeyPath, Pos] = {}
    data = _plain(merged, (), positions)
    return Loaded(data=data, positions=positions, base_dir=base_dir, environ=env, warnings=warnings)
