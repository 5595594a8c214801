"""docker's output shapes: go-units sizes and durations, tabwriter tables, JSON lines."""

from __future__ import annotations

import json
import time

import pytest

from api.units import human_duration
from cli import output

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0B"),
        (999, "999B"),
        (1000, "1kB"),
        (837_000, "837kB"),
        (1_234_567, "1.235MB"),
        (1_200_000, "1.2MB"),
        (4_261_550, "4.262MB"),
        (1e12, "1TB"),
        (1e30, "1e+06YB"),
    ],
)
def test_human_size(size, text):
    assert output.human_size(size) == text


def test_human_size_with_images_precision():
    assert output.human_size(4_261_550, precision=3) == "4.26MB"
    assert output.human_size(999_500, precision=3) == "1e+03kB"  # as Go's %.3g


@pytest.mark.parametrize(
    ("size", "text"),
    [(512, "512B"), (1536, "1.5KiB"), (32 << 20, "32MiB"), (8_232_423_424, "7.667GiB")],
)
def test_bytes_size(size, text):
    assert output.bytes_size(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.5, "Less than a second"),
        (1, "1 second"),
        (3, "3 seconds"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (119, "About a minute"),
        (120, "2 minutes"),
        (3599, "59 minutes"),
        (3600, "About an hour"),
        (5399, "About an hour"),
        (5400, "2 hours"),  # Go rounds halves away from zero
        (47 * 3600, "47 hours"),
        (48 * 3600, "2 days"),
        (13 * 86400, "13 days"),
        (14 * 86400, "2 weeks"),
        (60 * 86400, "2 months"),
        (2 * 365 * 86400, "2 years"),
    ],
)
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


def test_ago():
    assert output.ago(100.0, now=103.0) == "3 seconds ago"
    assert output.ago(100.0, now=99.0) == "Less than a second ago"  # clock skew


def test_ids_and_text():
    assert output.short_id("sha256:" + "ab" * 32) == "abababababab"
    assert output.short_id("c" * 64) == "c" * 12
    assert output.ellipsis("short", 20) == "short"
    assert output.ellipsis("sh -c 'while true; do sleep 1; done'", 20) == "sh -c 'while true; …"
    assert output.go_quote('sh -c "a\\b"') == '"sh -c \\"a\\\\b\\""'
    assert output.go_quote("é…") == '"é…"'
    assert output.labels_text({"b": "2", "a": "1"}) == "a=1,b=2"


def test_times(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert output.created_at(1_700_000_000) == "2023-11-14 22:13:20 +0000 UTC"
        assert output.rfc3339(1_700_000_000) == "2023-11-14T22:13:20Z"
    finally:
        monkeypatch.undo()
        time.tzset()
    assert output.rfc3339_nano(1_700_000_000.5) == "2023-11-14T22:13:20.500000000Z"
    assert output.rfc3339_nano(1_700_000_000) == "2023-11-14T22:13:20.000000000Z"


def test_table_pads_like_docker_tabwriter():
    headers = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    assert output.table(headers, []) == (
        "CONTAINER ID   IMAGE     COMMAND   CREATED   STATUS    PORTS     NAMES"
    )
    rows = [["abc", "a-rather-long-image:tag", "x", "", "Up", "", "web"]]
    assert output.table(headers, rows).splitlines()[1] == (
        "abc            a-rather-long-image:tag   x                   Up                  web"
    )


def test_json_line_and_array():
    assert output.json_line({"b": 1, "a": "é"}) == '{"a":"é","b":1}'
    assert output.json_array([{"a": 1}]) == '[\n    {\n        "a": 1\n    }\n]'
    assert json.loads(output.json_array([])) == []


def test_templates():
    row = {"ID": "abc", "Names": "web"}
    assert output.template("{{.ID}}\\t{{ .Names }}", row) == "abc\tweb"
    assert output.template("{{json .}}", row) == '{"ID":"abc","Names":"web"}'
    with pytest.raises(ValueError, match="can't evaluate field Nope"):
        output.template("{{.Nope}}", row)


def test_format_rows():
    rows = [{"ID": "abc", "Names": "web"}]
    cells = [["abc", "web"]]
    assert output.format_rows(None, ["ID", "NAMES"], rows, cells) == [
        "ID        NAMES\nabc       web"
    ]
    assert output.format_rows("table", ["ID", "NAMES"], rows, cells) == output.format_rows(
        None, ["ID", "NAMES"], rows, cells
    )
    assert output.format_rows("json", ["ID", "NAMES"], rows, cells) == [
        '{"ID":"abc","Names":"web"}'
    ]
    assert output.format_rows("{{.Names}}", ["ID", "NAMES"], rows, cells) == ["web"]
    with pytest.raises(ValueError, match="unsupported format"):
        output.format_rows("yaml", ["ID"], rows, cells)
