"""Dockerfile parsing: lines into `Instruction`s, and docker's `$VAR` substitution.

Parsing follows docker's classic parser: parser directives (`# escape=`, `# syntax=`)
only at the very top; `#` comments on their own lines (also inside a continuation);
the escape character (`\\` by default, or `` ` ``) at the end of a line continues it
(the lines are joined as they are, their spaces kept, as docker);
instruction words are case-insensitive. An instruction's arguments are kept as text
(`rest`) and split on demand: JSON (exec) form when the text is a JSON array of
strings, else shell form; `--flag=value` words before COPY/ADD/FROM sources.

Substitution (`expand`) is applied by the builder to the instructions docker expands
(not to RUN/CMD/ENTRYPOINT, whose shell does it): `$VAR`, `${VAR}`, `${VAR:-word}`,
`${VAR:+word}`, and the escape character before `$` for a literal dollar.

    >>> [i.command for i in parse("FROM busybox\\nRUN echo \\\\\\n  hi\\n")]
    ['FROM', 'RUN']
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from api.errors import InvalidArgument

KNOWN = frozenset(
    {
        "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY",
        "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL",
        "HEALTHCHECK", "SHELL",
    }
)  # fmt: skip
# Instructions whose arguments docker substitutes ARG/ENV values into.
EXPANDED = frozenset(
    {"FROM", "ADD", "COPY", "ENV", "EXPOSE", "LABEL", "STOPSIGNAL", "USER", "VOLUME",
     "WORKDIR", "ARG"}
)  # fmt: skip
_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Instruction:
    command: str  # upper case
    rest: str  # the argument text, continuations joined
    line: int  # 1-based line where it starts
    flags: dict[str, str] = field(default_factory=dict)
    raw: str = ""  # the whole instruction as written (continuations joined)

    @property
    def original(self) -> str:
        return self.raw or f"{self.command} {self.rest}".rstrip()

    def json_args(self) -> list[str] | None:
        """The exec form's words, or None when the text is not a JSON string array."""
        return json_array(self.rest)


@dataclass(frozen=True)
class Dockerfile:
    instructions: list[Instruction]
    escape: str = "\\"


def json_array(text: str) -> list[str] | None:
    stripped = text.strip()
    if not stripped.startswith("["):
        return None
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError:
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def decode(data: bytes) -> str:
    """The Dockerfile's text; a clear error if it is not UTF-8 (a BOM is dropped)."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        raise InvalidArgument(
            f"Dockerfile is not valid UTF-8 (byte {error.start}): save it as UTF-8 and build again"
        ) from None


def parse(text: str) -> Dockerfile:
    lines = text.splitlines()
    escape, start = _directives(lines)
    instructions: list[Instruction] = []
    pending: list[str] = []
    first = 0
    for number, raw in enumerate(lines[start:], start=start + 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and (stripped.startswith("#") or not stripped):
            continue  # comments and empty lines inside a continuation are dropped
        if not pending:
            first = number
        body = raw.rstrip()
        if body.endswith(escape):
            pending.append(body[: -len(escape)])
            continue
        pending.append(body)
        instructions.append(_instruction("".join(pending), first))
        pending = []
    if pending:
        instructions.append(_instruction("".join(pending), first))
    return Dockerfile(instructions=instructions, escape=escape)


def _directives(lines: list[str]) -> tuple[str, int]:
    escape = "\\"
    for index, line in enumerate(lines):
        match = _DIRECTIVE.fullmatch(line.strip())
        if not match:
            return escape, index
        key, value = match.group(1).lower(), match.group(2)
        if key == "escape":
            if value not in ("\\", "`"):
                raise InvalidArgument(f"invalid escape token '{value}' does not validate")
            escape = value
        elif key != "syntax":
            return escape, index  # an unknown directive is a comment
    return escape, len(lines)


def _instruction(text: str, line: int) -> Instruction:
    word, _, rest = text.strip().partition(" ")
    command = word.upper()
    if command not in KNOWN:
        raise InvalidArgument(f"Dockerfile parse error line {line}: unknown instruction: {word}")
    rest = rest.strip()
    flags: dict[str, str] = {}
    if command in ("COPY", "ADD", "FROM", "RUN", "HEALTHCHECK"):
        flags, rest = _flags(rest, command=command, line=line)
    return Instruction(command=command, rest=rest, line=line, flags=flags, raw=text.strip())


_ALLOWED_FLAGS = {
    # --link only changes how BuildKit stores the layer: accepted, same result here.
    # --chmod is not supported yet, so it is refused rather than ignored.
    "COPY": {"from", "chown", "link"},
    "ADD": {"chown", "link"},
    "FROM": {"platform"},
    "RUN": set(),
    "HEALTHCHECK": {"interval", "timeout", "start-period", "start-interval", "retries"},
}


def _flags(text: str, *, command: str, line: int) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    rest = text
    while rest.startswith("--"):
        word, _, after = rest.partition(" ")
        name, sign, value = word[2:].partition("=")
        if name not in _ALLOWED_FLAGS[command]:
            raise InvalidArgument(
                f"Dockerfile parse error line {line}: unknown flag: --{name} ({command})"
            )
        flags[name] = value if sign else "true"
        rest = after.strip()
    return flags, rest


# ---- argument shapes ------------------------------------------------------------


def words(text: str) -> list[str]:
    """Whitespace-separated words, or the JSON array's items (COPY, ADD, VOLUME)."""
    array = json_array(text)
    return array if array is not None else text.split()


def arg_declaration(text: str) -> tuple[str, str | None]:
    """`ARG NAME[=default]` → (name, default or None)."""
    name, sign, default = text.strip().partition("=")
    if not _NAME.fullmatch(name):
        raise InvalidArgument(f"ARG requires a valid name: {text}")
    if sign and len(default) >= 2 and default[0] == default[-1] and default[0] in "'\"":
        default = default[1:-1]
    return name, default if sign else None


# ---- substitution ---------------------------------------------------------------


def expand(text: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """Substitute `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alt}` from `env`;
    unset names become empty; `<escape>$` is a literal `$`."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == escape and i + 1 < len(text) and text[i + 1] == "$":
            out.append("$")
            i += 2
        elif char == "$" and i + 1 < len(text):
            value, i = _variable(text, i + 1, env, escape=escape)
            out.append(value)
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _variable(text: str, i: int, env: Mapping[str, str], *, escape: str) -> tuple[str, int]:
    """Parse after a `$` at `i - 1`; → (substituted text, index after it)."""
    if text[i] == "{":
        end = _closing_brace(text, i)
        inner = text[i + 1 : end]
        return _braced(inner, env, escape=escape), end + 1
    match = _NAME.match(text, i)
    if match is None:
        return "$", i
    return env.get(match.group(0), ""), match.end()


def _closing_brace(text: str, start: int) -> int:
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise InvalidArgument(f"missing '}}' in substitution: {text}")


def _braced(inner: str, env: Mapping[str, str], *, escape: str) -> str:
    match = _NAME.match(inner)
    if match is None:
        raise InvalidArgument(f"bad substitution: ${{{inner}}}")
    name, modifier = match.group(0), inner[match.end() :]
    value = env.get(name)
    if not modifier:
        return value or ""
    if modifier.startswith(":-") or modifier.startswith("-"):
        word = modifier.split("-", 1)[1]
        empty = not value if modifier.startswith(":") else value is None
        return expand(word, env, escape=escape) if empty else (value or "")
    if modifier.startswith(":+") or modifier.startswith("+"):
        word = modifier.split("+", 1)[1]
        present = bool(value) if modifier.startswith(":") else value is not None
        return expand(word, env, escape=escape) if present else ""
    raise InvalidArgument(f"unsupported modifier in substitution: ${{{inner}}}")
