"""Dockerfile parsing and `$VAR` substitution."""

from __future__ import annotations

import pytest

from agent.build.dockerfile import arg_declaration, decode, expand, parse, words
from agent.images.changes import pairs
from api.errors import InvalidArgument

pytestmark = pytest.mark.unit


def test_instructions_comments_and_continuations() -> None:
    text = """\
# syntax=docker/dockerfile:1
# a comment
from busybox AS base
RUN echo one \\
    # a comment inside the continuation
    two \\

    three
COPY --from=base --chown=1:2 a b /dst/
CMD ["sh", "-c", "echo hi"]
"""
    parsed = parse(text)
    assert [i.command for i in parsed.instructions] == ["FROM", "RUN", "COPY", "CMD"]
    assert parsed.instructions[0].rest == "busybox AS base"
    assert parsed.instructions[1].rest == "echo one     two     three"  # spaces kept
    assert parsed.instructions[1].line == 4
    copy = parsed.instructions[2]
    assert copy.flags == {"from": "base", "chown": "1:2"} and copy.rest == "a b /dst/"
    assert parsed.instructions[3].json_args() == ["sh", "-c", "echo hi"]
    assert parsed.instructions[1].json_args() is None


def test_escape_directive() -> None:
    parsed = parse("# escape=`\nFROM busybox\nRUN dir c:\\ `\n  && echo ok\n")
    assert parsed.escape == "`"
    assert parsed.instructions[1].rest == "dir c:\\   && echo ok"


def test_unknown_instruction_and_flag() -> None:
    with pytest.raises(InvalidArgument, match="line 2: unknown instruction: FOO"):
        parse("FROM x\nFOO bar\n")
    with pytest.raises(InvalidArgument, match="unknown flag: --bogus"):
        parse("FROM x\nCOPY --bogus=1 a b\n")


def test_not_utf8() -> None:
    with pytest.raises(InvalidArgument, match="not valid UTF-8"):
        decode(b"FROM x\n\xff\n")
    assert decode("\ufeffFROM x".encode()) == "FROM x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$A/${A}", "1/1"),
        ("${UNSET:-dflt} ${A:-dflt}", "dflt 1"),
        ("${A:+alt} ${UNSET:+alt}.", "alt ."),
        ("${EMPTY:-d} ${EMPTY-d}", "d "),
        ("\\$A $", "$A $"),
        ("${UNSET:-${A}x}", "1x"),
        ("$UNSET-", "-"),
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, {"A": "1", "EMPTY": ""}) == expected


def test_expand_with_backtick_escape() -> None:
    assert expand("`$A $A", {"A": "1"}, escape="`") == "$A 1"


def test_bad_substitution() -> None:
    with pytest.raises(InvalidArgument):
        expand("${A", {})
    with pytest.raises(InvalidArgument):
        expand("${A?err}", {})


def test_argument_shapes() -> None:
    assert words('["a b", "c"]') == ["a b", "c"]
    assert words("a  b c") == ["a", "b", "c"]
    assert pairs("ENV", 'A=1 B="two words"') == [("A", "1"), ("B", "two words")]
    assert pairs("ENV", "LEGACY value with spaces") == [("LEGACY", "value with spaces")]
    assert arg_declaration("V") == ("V", None)
    assert arg_declaration('V="x y"') == ("V", "x y")
    with pytest.raises(InvalidArgument):
        arg_declaration("1BAD=x")
