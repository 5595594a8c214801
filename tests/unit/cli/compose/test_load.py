"""The compose loader: safe YAML, `.env`, interpolation, multi-file merge, positions."""

from __future__ import annotations

import io
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from cli.compose.load import ComposeError, Loaded, Pos, load, parse_dotenv, where

pytestmark = pytest.mark.unit

FILES = Path(__file__).parent / "files"


def f(name: str) -> str:
    return str(FILES / name)


def load_one(name: str, **environ: str) -> Loaded:
    return load([f(name)], environ=environ)


def error_of(files: list[str], environ: dict[str, str] | None = None, **kw: Any) -> ComposeError:
    with pytest.raises(ComposeError) as info:
        load(files, environ=environ or {}, **kw)
    return info.value


# --- the basics: anchors, merge keys, x-, version -------------------------------------------


def test_basic_file_anchors_merge_keys_and_extensions():
    loaded = load_one("basic.yml")
    assert set(loaded.data) == {"services", "networks"}  # version and x-defaults dropped
    web = loaded.data["services"]["web"]
    assert web["image"] == "web:latest"  # explicit key beats the `<<` one
    assert web["restart"] == "always"
    assert web["labels"] == {"tier": "demo"}
    assert "x-notes" not in web
    assert web["command"] == ["httpd", "-f"]
    assert web["deploy"] == {"replicas": 3, "labels": {"debug": "yes"}}  # YAML 1.2 bools
    worker = loaded.data["services"]["worker"]
    assert worker["image"] == "busybox:1.36"
    assert worker["environment"] == {"WHEN": "2001-12-14", "FLAG": True}  # no timestamps
    assert loaded.base_dir == FILES
    assert loaded.warnings == []


def test_result_is_plain_python():
    def check(value: Any) -> None:
        assert type(value) in (dict, list, str, int, float, bool, type(None)), type(value)
        if isinstance(value, dict):
            for k, v in value.items():
                assert type(k) is str
                check(v)
        elif isinstance(value, list):
            for v in value:
                check(v)

    check(load([f("merge_base.yml"), f("merge_override.yml")], environ={}).data)


def test_positions_and_where():
    loaded = load_one("basic.yml")
    file = f("basic.yml")
    assert loaded.positions[("services",)] == Pos(file, 9)
    assert loaded.positions[("services", "web", "ports")] == Pos(file, 15)
    assert loaded.positions[("services", "web", "ports", 0)] == Pos(file, 16)
    assert loaded.positions[("services", "web", "deploy", "replicas")] == Pos(file, 18)
    # keys that came through `<<` point at the anchor's definition
    assert loaded.positions[("services", "web", "restart")] == Pos(file, 5)
    assert ("services", "web", "x-notes") not in loaded.positions
    assert where(loaded, ("services", "web", "deploy", "labels", "debug")) == f"{file}:20"
    assert where(loaded, ("services", "web", "deploy", "nope", 3)) == f"{file}:17"
    assert where(loaded, ("nothing",)) == ""
    assert where(loaded, ()) == ""


# --- hostile files ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bomb.yml", "bomb_in_extension.yml"])
def test_billion_laughs_is_refused_fast_with_bounded_memory(name):
    tracemalloc.start()
    start = time.monotonic()
    try:
        err = error_of([f(name)])
        elapsed = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "too many aliases (a YAML bomb?)" in str(err)
    assert str(err).startswith(f"{f(name)}:")
    assert elapsed < 1.0
    assert peak < 64 * 1024 * 1024


def test_many_aliases_below_the_limit_are_fine(tmp_path):
    lines = ["x-one: &one {image: busybox}", "services:"]
    lines += [f"  s{i}: *one" for i in range(200)]
    (tmp_path / "c.yml").write_text("\n".join(lines) + "\n")
    loaded = load([str(tmp_path / "c.yml")], environ={})
    assert len(loaded.data["services"]) == 200
    assert loaded.data["services"]["s199"] == {"image": "busybox"}


def test_deep_nesting_is_refused():
    err = error_of([f("deep.yml")])
    assert "nesting deeper than 64" in str(err)
    assert err.file == f("deep.yml")
    assert err.line == 4


def test_megabyte_of_brackets_is_refused_fast():
    start = time.monotonic()
    err = error_of(["-"], stdin=io.StringIO("[" * (1024 * 1024 - 1)))
    assert "nesting deeper than 64" in str(err)
    assert time.monotonic() - start < 1.0


def test_recursive_alias_is_refused():
    err = error_of([f("recursive_alias.yml")])
    assert "nesting deeper than 64" in str(err)


def test_duplicate_key_names_its_line():
    err = error_of([f("dupkey.yml")])
    assert str(err) == f"{f('dupkey.yml')}:6: services.web: duplicate key 'image'"
    assert err.line == 6


def test_size_cap(tmp_path):
    big = tmp_path / "big.yml"
    big.write_text("services:\n" + "#" * (1024 * 1024) + "\n")
    err = error_of([str(big)])
    assert "file too large" in str(err)
    assert str(err).startswith(str(big))
    err = error_of(["-"], stdin=io.StringIO("a: b\n" + " " * (1024 * 1024)))
    assert "file too large" in str(err)


def test_top_level_must_be_a_mapping():
    err = error_of([f("toplevel_list.yml")])
    assert str(err) == f"{f('toplevel_list.yml')}:1: top level must be a mapping"


def test_python_tags_are_refused():
    err = error_of([f("badtag.yml")])
    assert "unsupported tag tag:yaml.org,2002:python/object/apply:os.system" in str(err)
    assert err.line == 3
    assert err.path == ("services", "web", "image")


def test_syntax_errors_carry_file_and_line():
    err = error_of([f("badyaml.yml")])
    assert str(err).startswith(f"{f('badyaml.yml')}:")
    assert "invalid YAML" in str(err)
    assert err.line >= 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty compose file"),
        ("a: 1\n---\nb: 2\n", "invalid YAML"),
        ("? [a, b]\n: 1\n", "mapping keys must be scalars"),
        ("<<: 3\n", "merge key '<<' needs mappings"),
    ],
)
def test_other_malformed_documents(text, message):
    assert message in str(error_of(["-"], stdin=io.StringIO(text)))


def test_missing_file():
    err = error_of([f("no-such.yml")])
    assert str(err).startswith(f("no-such.yml"))


# --- interpolation ------------------------------------------------------------------------


def test_interpolation_forms():
    loaded = load_one(
        "interp.yml", REGISTRY="reg:5000", GREETING="hi", NAME="bob", EMPTY="", REPLICAS="3"
    )
    web = loaded.data["services"]["web"]
    assert web["image"] == "reg:5000/web:latest"
    assert web["command"] == "echo $HOME $$ cost: $5 hi bob-x $1 $ {x}"
    env = web["environment"]
    assert env["EMPTY_COLON"] == "fallback"
    assert env["EMPTY_PLAIN"] == ""
    assert env["UNSET_PLAIN"] == "fallback"
    assert env["NESTED"] == "deep"
    assert env["NESTED_SET"] == "hi"
    assert env["ALT"] == "yes"
    assert env["ALT_EMPTY"] == ""
    assert env["MISSING"] == ""
    assert env["${KEY_NOT_INTERPOLATED}"] == "kept"  # keys are not interpolated
    assert env["NUMBER"] == 3
    assert web["deploy"]["replicas"] == "3"  # a string: typing is normalisation's job
    assert loaded.warnings == [
        'The "NOT_SET_ANYWHERE" variable is not set. Defaulting to a blank string.'
    ]


def test_unused_default_operand_is_not_evaluated():
    loaded = load(
        ["-"],
        environ={"A": "set"},
        stdin=io.StringIO("a: ${A:-${UNSET}}\nb: ${A:?${ALSO_UNSET}}\nc: ${A-$UNSET}\n"),
    )
    assert loaded.data == {"a": "set", "b": "set", "c": "set"}
    assert loaded.warnings == []


def test_unset_variable_warns_once():
    loaded = load(["-"], environ={}, stdin=io.StringIO("a: $X\nb: ${X}\nc: [$X]\n"))
    assert loaded.data == {"a": "", "b": "", "c": [""]}
    assert len(loaded.warnings) == 1


def test_required_variable_error_has_position():
    err = error_of([f("required.yml")])
    assert str(err) == (
        f"{f('required.yml')}:5: services.web.environment.PASSWORD: "
        "required variable DB_PASSWORD is missing a value: set DB_PASSWORD in .env"
    )
    # `:?` refuses empty too; `?` accepts empty
    assert "DB_PASSWORD" in str(error_of([f("required.yml")], {"DB_PASSWORD": ""}))
    loaded = load([f("required_plain.yml")], environ={"IMAGE": ""})
    assert loaded.data["services"]["web"]["image"] == ""
    err = error_of([f("required_plain.yml")])
    assert "required variable IMAGE is missing a value: image is required" in str(err)
    assert err.line == 3


def test_bad_interpolation_syntax():
    err = error_of([f("bad_interp.yml")])
    assert "invalid interpolation format" in str(err)
    assert err.line == 3
    for text in ("a: ${}\n", "a: ${A:=x}\n", "a: ${A:-${B}\n"):
        assert "invalid interpolation format" in str(error_of(["-"], stdin=io.StringIO(text)))


def test_interpolation_nesting_is_bounded():
    text = "a: " + "${A:-" * 40 + "x" + "}" * 40 + "\n"
    assert "nested too deeply" in str(error_of(["-"], stdin=io.StringIO(text)))


def test_interpolated_values_cannot_inject_yaml():
    loaded = load(["-"], environ={"V": "x\nb: injected"}, stdin=io.StringIO("a: ${V}\n"))
    assert loaded.data == {"a": "x\nb: injected"}


# --- .env ---------------------------------------------------------------------------------


def test_dotenv_beside_first_file_gives_defaults():
    loaded = load([f("envdir/compose.yml")], environ={})
    web = loaded.data["services"]["web"]
    assert web["image"] == "busybox:from-dotenv"
    assert web["environment"] == {
        "FROM_DOTENV": "dotenv",
        "QUOTED": "two words # not a comment",
        "SINGLE": "$literal ${X}",
        "EXPORTED": "yes",
        "COMMENTED": "value",
    }
    assert loaded.environ["ONLY_DOTENV"] == "dotenv"


def test_real_environment_wins_over_dotenv():
    loaded = load([f("envdir/compose.yml")], environ={"TAG": "real"})
    assert loaded.data["services"]["web"]["image"] == "busybox:real"
    assert loaded.environ["TAG"] == "real"


def test_dotenv_of_an_override_file_is_not_read():
    loaded = load([f("basic.yml"), f("envdir/override.yml")], environ={})
    assert loaded.data["services"]["web"]["labels"] == {"tier": "demo", "tag": ""}
    assert loaded.warnings == ['The "TAG" variable is not set. Defaulting to a blank string.']


def test_dotenv_parser():
    assert parse_dotenv('A=1\n\n# c\nexport B = "x\\ny"\nC=\n', ".env") == {
        "A": "1",
        "B": "x\ny",
        "C": "",
    }
    with pytest.raises(ComposeError, match=r"^\.env:2: invalid line"):
        parse_dotenv("A=1\nnot a line\n", ".env")
    with pytest.raises(ComposeError, match="unterminated"):
        parse_dotenv("A='x\n", ".env")


# --- merging ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def merged() -> Loaded:
    return load([f("merge_base.yml"), f("merge_override.yml")], environ={})


@pytest.fixture(scope="module")
def web(merged: Loaded) -> dict[str, Any]:
    return merged.data["services"]["web"]  # type: ignore[no-any-return]


def test_merge_scalars_and_mappings(merged, web):
    assert web["image"] == "web:2"
    assert merged.data["services"]["db"] == {"image": "db:1"}
    assert merged.data["services"]["cache"] == {"image": "redis"}
    assert web["deploy"]["replicas"] == 2
    assert web["healthcheck"]["interval"] == "10s"


def test_merge_replaces_commands(web):
    assert web["command"] == ["httpd", "-v"]
    assert web["entrypoint"] == ["/bin/ash", "-c"]
    assert web["healthcheck"]["test"] == ["CMD-SHELL", "true"]


def test_merge_ports_unique_by_ip_published_target_protocol(web):
    assert web["ports"] == [
        "8080:80",
        "9090:90/udp",
        {"target": 443, "published": 8443, "mode": "host"},  # replaced in place
        "127.0.0.1:9090:90/udp",  # another host ip: another port
        "7070:70",
    ]


def test_merge_volumes_by_target(web):
    assert web["volumes"] == ["other:/var/lib/data", "./conf:/etc/conf:ro", "/logs"]


def test_merge_secrets_and_configs_by_target(web):
    assert web["secrets"] == [
        {"source": "db_password2", "target": "db_password"},
        {"source": "api_key", "target": "/run/secrets/key"},
        "api_key",
    ]
    assert web["configs"] == ["nginx_conf", "extra_conf"]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("expose", ["3000", "3001", "3002"]),
        ("dns", ["1.1.1.1", "8.8.8.8"]),
        ("dns_search", ["example.com", "example.org"]),
        ("extra_hosts", ["db:10.0.0.1", "cache:10.0.0.2"]),
        ("cap_add", ["NET_ADMIN", "SYS_TIME"]),
        ("cap_drop", ["ALL", "NET_RAW"]),
    ],
)
def test_merge_plain_sequences_append_unique(web, key, expected):
    assert web[key] == expected


def test_merge_nested_sequences_append(web):
    assert web["deploy"]["placement"]["constraints"] == [
        "node.role==worker",
        "node.labels.zone==a",
    ]


def test_merge_labels_and_environment_lists_as_maps(web):
    assert web["labels"] == {"a": "1", "b": "20", "c": "3"}
    assert web["environment"] == {"A": "1", "B": "2", "C": "3"}


def test_stdin_only_once():
    err = error_of(["-", "-"], stdin=io.StringIO("a: 1\n"))
    assert "only once" in str(err)


def test_merge_env_lists(tmp_path):
    (tmp_path / "a.yml").write_text("services:\n  s:\n    environment: [A=1, B=2]\n")
    loaded = load(
        [str(tmp_path / "a.yml"), "-"],
        environ={},
        stdin=io.StringIO("services:\n  s:\n    environment: [B=3, C]\n"),
    )
    assert loaded.data["services"]["s"]["environment"] == {"A": "1", "B": "3", "C": None}
    assert loaded.positions[("services", "s", "environment", "B")] == Pos("<stdin>", 3)
    assert loaded.positions[("services", "s", "environment", "A")] == Pos(
        str(tmp_path / "a.yml"), 3
    )
    assert loaded.base_dir == tmp_path


def test_merge_networks_and_depends_on_list_with_map(web):
    assert web["networks"] == {"front": None, "back": {"aliases": ["api"]}}
    assert web["depends_on"] == {
        "db": {"condition": "service_started"},
        "cache": {"condition": "service_healthy"},
    }


def test_merge_positions_come_from_the_last_file(merged):
    base, over = f("merge_base.yml"), f("merge_override.yml")
    pos = merged.positions
    assert pos[("services", "web", "image")] == Pos(over, 3)
    assert pos[("services", "db", "image")] == Pos(base, 42)
    assert pos[("services", "web", "ports", 1)] == Pos(base, 8)
    assert pos[("services", "web", "ports", 2)] == Pos(over, 9)
    assert pos[("services", "web", "ports", 4)] == Pos(over, 12)
    assert pos[("services", "web", "labels", "a")] == Pos(base, 27)
    assert pos[("services", "web", "labels", "c")] == Pos(over, 31)
    assert pos[("services", "web", "deploy", "replicas")] == Pos(base, 38)
    assert pos[("services", "web", "deploy", "placement", "constraints", 1)] == Pos(over, 45)
    assert where(merged, ("services", "web", "command", 1)) == f"{over}:4"


def test_reset_and_override_tags():
    loaded = load(
        [f("merge_base.yml"), f("merge_override.yml"), f("reset_override.yml")], environ={}
    )
    web = loaded.data["services"]["web"]
    assert "ports" not in web
    assert "healthcheck" not in web
    assert web["cap_add"] == ["CHOWN"]
    assert web["deploy"] == {"replicas": 1}
    # alone, the tags resolve to their values / remove their keys
    alone = load_one("reset_override.yml")
    assert alone.data["services"]["web"] == {"cap_add": ["CHOWN"], "deploy": {"replicas": 1}}


def test_later_type_change_wins(tmp_path):
    (tmp_path / "a.yml").write_text("services:\n  s:\n    build: {context: .}\n")
    loaded = load(
        [str(tmp_path / "a.yml"), "-"],
        environ={},
        stdin=io.StringIO("services:\n  s:\n    build: ./dir\n"),
    )
    assert loaded.data["services"]["s"]["build"] == "./dir"


def test_each_file_is_interpolated_before_merge(tmp_path):
    (tmp_path / "a.yml").write_text("services:\n  s:\n    image: a\n")
    err = error_of(
        [str(tmp_path / "a.yml"), "-"],
        stdin=io.StringIO("services:\n  s:\n    image: ${I:?no image}\n"),
    )
    assert (
        str(err) == "<stdin>:3: services.s.image: required variable I is missing a value: no image"
    )


# --- stdin --------------------------------------------------------------------------------


def test_stdin_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("T=from-cwd-dotenv\n")
    loaded = load(["-"], environ={}, stdin=io.StringIO("services:\n  s:\n    image: ${T}\n"))
    assert loaded.data == {"services": {"s": {"image": "from-cwd-dotenv"}}}
    assert loaded.base_dir == tmp_path
    assert loaded.positions[("services", "s", "image")] == Pos("<stdin>", 3)


def test_stdin_required_when_dash_given():
    assert "stdin" in str(error_of(["-"]))


def test_no_files():
    assert "no compose file" in str(error_of([]))


def test_scalars_are_read_as_compose_does():
    text = "a: [8080:80, 1:30, 0440, 10, 0x1f, 1.5, yes, on, ~, True, 2001-12-14, '3']\n"
    loaded = load(["-"], environ={}, stdin=io.StringIO(text))
    assert loaded.data["a"] == [
        "8080:80",  # not base 60
        "1:30",
        0o440,  # file modes keep YAML 1.1 octal, as docker documents them
        10,
        31,
        1.5,
        "yes",  # only true/false are booleans
        "on",
        None,
        True,
        "2001-12-14",  # no timestamps
        "3",
    ]
