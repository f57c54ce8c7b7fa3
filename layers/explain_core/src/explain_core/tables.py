"""Tabular uploads (CSV or JSON Lines) parsed into a tabular model's feature matrix.

Limits are checked before any work: the byte size first, then the row count while reading
(parsing stops at the first row over the limit, so no more than ``max_rows`` rows are ever
built). Columns are matched to the model card's ``feature_names`` by name, in any order, and
the result is in the card's order. A card without feature names takes them from the upload
(the CSV header, the keys of the first JSON object, or ``feature_0`` ... for JSON arrays), in
the file's order, and only their number is checked against the model. Every refusal is an :class:`InvalidTableError` (or
subclass) whose message says where (line, column, value) and what was expected.
"""

import csv
import io
import json
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from explain_core.errors import InvalidTableError, TableTooLargeError, UnsupportedTableFormatError
from explain_core.uploaded_files import DuplicateKeyError, clip, decode_utf8, file_format, jsonl_items, show

#: File extensions (lower case) and the format each one means.
SUPPORTED_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}

#: Names listed in a message; the details carry up to _MAX_LISTED_DETAILS.
_MAX_LISTED = 10
_MAX_LISTED_DETAILS = 100


@dataclass
class Table:
    values: np.ndarray  # float64, (rows, features), columns in the card's feature order
    feature_names: list[str]  # the card's order, or the file's when the card names none
    format: str  # "csv" or "jsonl"
    line_numbers: list[int]  # 1-based line in the file where each data row starts


def table_format(filename: str) -> str:
    """The table format named by ``filename``'s extension (case-insensitive)."""
    return file_format(filename, SUPPORTED_EXTENSIONS, UnsupportedTableFormatError,
                       "tables must be CSV or JSON Lines files")


def parse_table(data: bytes, filename: str, feature_names: list[str] | None, *, max_bytes: int, max_rows: int,
                feature_count: int | None = None) -> Table:
    """Parse an uploaded table into float64 values in ``feature_names`` order, or raise a typed error.

    ``feature_names=None``: the file names the features; there must be ``feature_count`` of them.
    """
    if len(data) > max_bytes:
        raise TableTooLargeError(
            f"the file is {len(data)} bytes; the limit is {max_bytes}", size=len(data), limit=max_bytes
        )
    fmt = table_format(filename)
    if not data:
        raise InvalidTableError("the file is empty (0 bytes): it has no data rows")
    text = _decode(data)
    names = _Names(feature_names, feature_count)
    if fmt == "csv":
        rows, lines = _parse_csv(text, names, max_rows)
    else:
        rows, lines = _parse_jsonl(text, names, max_rows)
    feature_names = names.resolved
    values = np.array(rows, dtype=np.float64).reshape(len(rows), len(feature_names))
    return Table(values=values, feature_names=list(feature_names), format=fmt, line_numbers=lines)


class _Names:
    """The feature names: the card's, or the first ones the file gives (checked against the model's count)."""

    def __init__(self, card_names: list[str] | None, count: int | None):
        if card_names is None and count is None:
            raise ValueError("parse_table needs feature_names or feature_count")
        self.resolved = list(card_names) if card_names is not None else None
        self.count = count

    def get(self, file_names: list[str], *, line: int, where: str) -> list[str]:
        if self.resolved is None:
            if len(file_names) != self.count:
                raise InvalidTableError(
                    f"line {line}: {where} has {len(file_names)} features; the model takes {self.count} "
                    "(its card names none, so the file's names are used in the file's order)",
                    line=line, expected=self.count, got=len(file_names),
                )
            self.resolved = list(file_names)
        return self.resolved


# --- text ---------------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    """UTF-8 text without a BOM; anything else (other encodings, binary data) is refused."""
    return decode_utf8(data, InvalidTableError, encoding_advice="save the table as UTF-8 (in Excel: 'CSV UTF-8')",
                       binary_advice="upload a UTF-8 CSV or JSON Lines file")


def _listing(names: list[str]) -> str:
    shown = ", ".join(show(n) for n in names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def _check_row_limit(count: int, max_rows: int, line: int) -> None:
    if count > max_rows:
        raise TableTooLargeError(
            f"the table has more than {max_rows} data rows (line {line} is row {count}); the limit is {max_rows}",
            line=line,
            limit=max_rows,
        )


def _no_rows(what: str) -> InvalidTableError:
    return InvalidTableError(f"the file has no data rows ({what})")


def _match_names(names: list[str], feature_names: list[str], *, where: str, kind: str) -> None:
    """Refuse ``names`` (CSV header or JSON keys) unless they are exactly the features, in any order."""
    wanted = set(feature_names)
    present = set(names)
    missing = [f for f in feature_names if f not in present]
    unexpected = [n for n in names if n not in wanted]
    if not missing and not unexpected:
        return
    problems = []
    if missing:
        problems.append(f"missing {kind}: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {kind}: {_listing(unexpected)}")
    message = f"{where} does not match the model's features: " + "; ".join(problems)
    lowered = {f.lower() for f in missing}
    if any(n.lower() in lowered for n in unexpected):
        message += " (names are case-sensitive)"
    message += f"; expected {len(feature_names)} {kind} named after the model's features, in any order"
    raise InvalidTableError(
        message,
        missing=missing[:_MAX_LISTED_DETAILS],
        unexpected=[clip(n) for n in unexpected[:_MAX_LISTED_DETAILS]],
        missing_count=len(missing),
        unexpected_count=len(unexpected),
    )


# --- CSV ----------------------------------------------------------------------------------


def _is_float(cell: str) -> bool:
    try:
        float(cell.strip())
    except ValueError:
        return False
    return True


def _csv_value(cell: str, *, line: int, column: str) -> float:
    try:
        value = float(cell.strip()) if cell.strip() else math.nan  # an empty cell is a missing value
    except ValueError:
        raise InvalidTableError(
            f"line {line}, column {show(column)}: {show(cell)} is not a number; expected a finite number",
            line=line,
            column=column,
            value=clip(cell),
        ) from None
    if not math.isfinite(value):
        raise InvalidTableError(
            f"line {line}, column {show(column)}: missing or non-finite value {show(cell)}; expected a finite number",
            line=line,
            column=column,
            value=clip(cell),
        )
    return value


def _parse_csv(text: str, names: _Names, max_rows: int) -> tuple[list[list[float]], list[int]]:
    # newline="" keeps quoted line breaks and lets the csv module handle \r\n and \r itself;
    # skipinitialspace reads `a, "b"` as two fields; strict refuses stray quotes.
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True, strict=True)
    header: list[str] | None = None
    order: list[int] = []
    rows: list[list[float]] = []
    lines: list[int] = []
    while True:
        start = reader.line_num + 1  # a quoted field may span lines: report where the row starts
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise InvalidTableError(
                f"line {start}: malformed CSV ({exc}); check for an unclosed or stray quote",
                line=start,
            ) from None
        if all(not cell.strip() for cell in cells):
            continue  # blank line (or a row of empty cells, as spreadsheets leave at the end)
        if header is None:
            header = [cell.strip() for cell in cells]
            if names.resolved is None and all(_is_float(cell) for cell in header):
                raise InvalidTableError(
                    f"line {start} looks like data ({show(','.join(header))}): the model card names no features, "
                    "so a header row naming the columns is required as the first row",
                    line=start,
                )
            order = _csv_header(header, names.get(header, line=start, where="the header"), line=start)
            continue
        _check_row_limit(len(rows) + 1, max_rows, start)
        if len(cells) != len(header):
            extra = cells[len(header) :]
            hint = " (a trailing comma?)" if extra and not any(c.strip() for c in extra) else ""
            raise InvalidTableError(
                f"line {start} has {len(cells)} fields; expected {len(header)}, one per header column{hint}",
                line=start,
                expected=len(header),
                got=len(cells),
            )
        parsed = [_csv_value(cell, line=start, column=name) for cell, name in zip(cells, header, strict=True)]
        rows.append([parsed[i] for i in order])
        lines.append(start)
    if header is None:
        raise _no_rows("it is empty or blank")
    if not rows:
        raise _no_rows("only a header row")
    return rows, lines


def _csv_header(header: list[str], feature_names: list[str], *, line: int) -> list[int]:
    """Check the header row; return, for each feature in the card's order, its column index."""
    if set(header) != set(feature_names) and all(_is_float(cell) for cell in header):
        raise InvalidTableError(
            f"line {line} looks like data ({show(','.join(header))}): a header row with the feature names "
            f"is required as the first row, e.g. {show(','.join(feature_names))}",
            line=line,
        )
    empty = [i + 1 for i, name in enumerate(header) if not name]
    if empty:
        raise InvalidTableError(
            f"line {line}: header column {empty[0]} has no name (an index column or a trailing comma?); "
            "every column must be named after one of the model's features",
            line=line,
            column_number=empty[0],
        )
    duplicates = [name for name, count in Counter(header).items() if count > 1]
    if duplicates:
        raise InvalidTableError(
            f"line {line}: the header names these columns more than once: {_listing(duplicates)}; "
            "each feature must appear in exactly one column",
            line=line,
            duplicates=[clip(n) for n in duplicates[:_MAX_LISTED_DETAILS]],
        )
    _match_names(header, feature_names, where=f"the header (line {line})", kind="columns")
    index = {name: i for i, name in enumerate(header)}
    return [index[f] for f in feature_names]


# --- JSON Lines ---------------------------------------------------------------------------


def _object_pairs(pairs: list[tuple[str, object]]) -> dict:
    result = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKeyError(key)
        result[key] = value
    return result


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "true/false", type(None): "null"}


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), "a number")


def _json_value(value: object, *, line: int, column: str) -> float:
    if isinstance(value, float):  # JSON integers are parsed as floats (parse_int=float)
        if math.isfinite(value):
            return value
        problem = f"missing or non-finite value {value!r}"
    elif value is None:
        problem = "missing or non-finite value null"
    elif isinstance(value, str):
        problem = f"{show(value)} is a string; write numbers without quotes"
    else:
        problem = f"{clip(json.dumps(value))} is {_json_type(value)}, not a number"
    raise InvalidTableError(
        f"line {line}, feature {show(column)}: {problem}; expected a finite number",
        line=line,
        column=column,
        value=clip(json.dumps(value)),
    )


def _parse_jsonl(text: str, names: _Names, max_rows: int) -> tuple[list[list[float]], list[int]]:
    rows: list[list[float]] = []
    lines: list[int] = []
    expected = "an object (feature name -> number, each feature once) or an array of numbers"
    # parse_int=float: huge integers become inf (refused below) instead of raising.
    for number, line, item in jsonl_items(text, InvalidTableError, expected,
                                          lambda count, number: _check_row_limit(count, max_rows, number),
                                          parse_int=float, object_pairs_hook=_object_pairs):
        if isinstance(item, dict):
            feature_names = names.get(list(item), line=number, where="the object")
            _match_names(list(item), feature_names, where=f"line {number}", kind="keys")
            rows.append([_json_value(item[f], line=number, column=f) for f in feature_names])
        elif isinstance(item, list):
            feature_names = names.get([f"feature_{i}" for i in range(len(item))], line=number, where="the array")
            if len(item) != len(feature_names):
                raise InvalidTableError(
                    f"line {number}: the array has {len(item)} values; expected {len(feature_names)}, "
                    "one per feature in the model's order",
                    line=number,
                    expected=len(feature_names),
                    got=len(item),
                )
            if item and all(isinstance(v, str) for v in item) and set(item) == set(feature_names):
                raise InvalidTableError(
                    f"line {number} holds the feature names: JSON Lines files have no header row; remove it",
                    line=number,
                )
            rows.append([_json_value(v, line=number, column=f) for v, f in zip(item, feature_names, strict=True)])
        else:
            raise InvalidTableError(
                f"line {number}: got {_json_type(item)} ({clip(line.strip())}); expected a JSON object "
                "(feature name -> number) or an array of numbers",
                line=number,
            )
        lines.append(number)
    if not rows:
        raise _no_rows("it is empty or blank")
    return rows, lines
