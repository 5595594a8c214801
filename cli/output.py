"""docker's output shapes, as pure functions from values to text.

Sizes and durations follow go-units (`HumanSize`: base 1000, "1.23MB"; `BytesSize`: base
1024, "1.5MiB"; `HumanDuration`: "About a minute", "2 hours"). Tables are docker's
tabwriter layout: every column but the last is padded to max(10, widest + 3), so
columns are at least three spaces apart. `--format json` prints one compact JSON object
per line, keys sorted, as docker's `{{json .}}`. Plain text only: no rich, no colour
(start-up time).

    >>> print(table(["IMAGE", "NAMES"], [["busybox", "web"]]))
    IMAGE     NAMES
    busybox   web
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")
MIN_WIDTH = 10
PADDING = 3
SHORT_ID = 12


def _scaled(size: float, base: float, units: Sequence[str], precision: int) -> str:
    unit = 0
    while size >= base and unit < len(units) - 1:
        size /= base
        unit += 1
    return f"{size:.{precision}g}{units[unit]}"


def human_size(size: float, *, precision: int = 4) -> str:
    """go-units HumanSizeWithPrecision: `837kB`, `1.2MB` (images use precision 3)."""
    return _scaled(size, 1000.0, DECIMAL_UNITS, precision)


def bytes_size(size: float) -> str:
    """go-units BytesSize: `1.5MiB`, `7.667GiB` (stats, info)."""
    return _scaled(size, 1024.0, BINARY_UNITS, 4)


def ago(timestamp: float, *, now: float) -> str:
    """`3 seconds ago`, as docker's CREATED column."""
    from api.units import human_duration  # cli keeps api out of module level: start-up

    return f"{human_duration(max(now - timestamp, 0.0))} ago"


def short_id(object_id: str) -> str:
    """docker's TruncateID: the first 12 hex digits, without `sha256:`."""
    return object_id.removeprefix("sha256:")[:SHORT_ID]


def ellipsis(text: str, width: int) -> str:
    """Cut `text` to `width` characters, the last one `…`."""
    return text if len(text) <= width else text[: width - 1] + "…"


def go_quote(text: str) -> str:
    """Go's strconv.Quote for printable text: double quotes, `\\` and `"` escaped."""
    import json

    escaped = json.dumps(text, ensure_ascii=False)[1:-1]
    return f'"{escaped}"'


def created_at(timestamp: float) -> str:
    """Go's time.String() in local time: `2024-01-02 15:04:05 +0100 CET`."""
    return time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(timestamp))


def rfc3339(timestamp: float) -> str:
    """`2024-01-02T15:04:05+01:00` in local time, as docker's CreatedAt of volumes."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(timestamp))
    return re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", stamp).replace("+00:00", "Z")


def rfc3339_nano(timestamp: float) -> str:
    """docker's log timestamp, UTC with nine fraction digits: `...T15:04:05.123456789Z`."""
    nanos = round(timestamp * 1_000_000_000)
    seconds, fraction = divmod(nanos, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def labels_text(labels: Mapping[str, str]) -> str:
    """`k=v,k2=v2`, sorted, as docker's Labels field."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """docker's tabwriter table (minwidth 10, padding 3), one line per row."""
    lines = [headers, *rows]
    widths = [
        max(MIN_WIDTH, max(len(line[col]) for line in lines) + PADDING)
        for col in range(len(headers) - 1)
    ]
    out = []
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        out.append("".join(cells) + line[-1])
    return "\n".join(out)


def json_line(obj: Mapping[str, Any]) -> str:
    """One compact JSON object, keys sorted, as docker's `--format json`."""
    import json

    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def json_array(docs: Sequence[Any]) -> str:
    """An inspect document list: a JSON array indented by 4, as docker's `inspect`."""
    import json

    return json.dumps(list(docs), ensure_ascii=False, indent=4)


_FIELD = r"\{\{\s*(?:\.(\w+)|json\s+\.)\s*\}\}"


def template(fmt: str, fields: Mapping[str, Any]) -> str:
    """The common subset of docker's Go templates: `{{.Field}}` and `{{json .}}`.

    `\\t` and `\\n` in the format are expanded, as people type them in a shell.
    """

    def field(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return json_line(fields)
        if name not in fields:
            raise ValueError(f"template: can't evaluate field {name}")
        return str(fields[name])

    return re.sub(_FIELD, field, fmt.replace("\\t", "\t").replace("\\n", "\n"))


def check_format(fmt: str | None) -> str | None:
    """Validate a `--format` value: None/`table`, `json`, or a template with `{{`."""
    if fmt not in (None, "", "table", "json") and "{{" not in fmt:
        raise ValueError(f"unsupported format: '{fmt}' (use table, json or a template)")
    return fmt


def format_rows(
    fmt: str | None,
    headers: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    cells: Sequence[Sequence[str]],
) -> list[str]:
    """The lines of a list command for `--format`: None/`table`, `json`, or a template.

    `rows` are docker's JSON objects and `cells` the matching table cells.
    """
    if fmt in (None, "", "table"):
        return [table(headers, cells)]
    if check_format(fmt) == "json":
        return [json_line(row) for row in rows]
    return [template(fmt, row) for row in rows]
