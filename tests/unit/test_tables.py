"""Unit tests for explain_core.tables: CSV and JSON Lines uploads parsed into the card's feature order."""

import json

import numpy as np
import pytest

from explain_core.errors import InvalidTableError, TableTooLargeError, UnsupportedTableFormatError
from explain_core.tables import SUPPORTED_EXTENSIONS, Table, parse_table, table_format

FEATURES = ["age", "income", "score"]
LIMITS = {"max_bytes": 1024 * 1024, "max_rows": 100}


def parse(data: bytes | str, filename: str = "upload.csv", features=FEATURES, **limits) -> Table:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return parse_table(data, filename, features, **{**LIMITS, **limits})


def refused(data: bytes | str, filename: str = "upload.csv", error=InvalidTableError, **limits):
    """Parse expecting a refusal of exactly type ``error``; return the error."""
    with pytest.raises(InvalidTableError) as info:
        parse(data, filename, **limits)
    assert type(info.value) is error
    return info.value


# --- table_format -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "fmt"),
    [
        ("data.csv", "csv"),
        ("DATA.CSV", "csv"),
        ("incoming/user/rows.JsonL", "jsonl"),
        ("rows.ndjson", "jsonl"),
        ("archive.v2.csv", "csv"),
    ],
)
def test_table_format_by_extension(filename, fmt):
    assert table_format(filename) == fmt


@pytest.mark.parametrize("filename", ["data.xlsx", "data.csv.gz", "data.json", "README", "data.tsv"])
def test_table_format_refuses_other_extensions(filename):
    with pytest.raises(UnsupportedTableFormatError) as info:
        table_format(filename)
    error = info.value
    assert error.code == "unsupported_table_format"
    assert error.status == 415
    for extension in SUPPORTED_EXTENSIONS:
        assert extension in error.message
    assert error.details["supported"] == [".csv", ".jsonl", ".ndjson"]


def test_table_format_names_the_extension_or_its_absence():
    with pytest.raises(UnsupportedTableFormatError) as info:
        table_format("sheet.XLSX")
    assert "'.xlsx'" in info.value.message and info.value.details["extension"] == ".xlsx"
    with pytest.raises(UnsupportedTableFormatError) as info:
        table_format("README")
    assert "no extension" in info.value.message


def test_parse_table_refuses_unsupported_format():
    error = refused("age,income,score\n1,2,3\n", "rows.parquet", error=UnsupportedTableFormatError)
    assert error.code == "unsupported_table_format"


# --- CSV: values --------------------------------------------------------------------------


def test_csv_values_in_card_order():
    table = parse("age,income,score\n30,1000.5,0.25\n41,-2e3,1\n")
    assert isinstance(table, Table)
    assert table.format == "csv"
    assert table.feature_names == FEATURES
    assert table.values.dtype == np.float64
    np.testing.assert_array_equal(table.values, [[30, 1000.5, 0.25], [41, -2000, 1]])
    assert table.line_numbers == [2, 3]


def test_csv_columns_in_another_order_are_reordered():
    table = parse("score,age,income\n0.5,30,1000\n0.9,41,2000\n")
    np.testing.assert_array_equal(table.values, [[30, 1000, 0.5], [41, 2000, 0.9]])
    assert table.feature_names == FEATURES


def test_csv_header_names_and_cells_are_stripped():
    table = parse(" income , score,age \n 1000 ,  0.5,30\n")
    np.testing.assert_array_equal(table.values, [[30, 1000, 0.5]])


def test_csv_blank_lines_are_skipped_and_line_numbers_kept():
    table = parse("\nage,income,score\n\n1,2,3\n   \n4,5,6\n\n,,\n7,8,9")
    np.testing.assert_array_equal(table.values, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert table.line_numbers == [4, 6, 9]


def test_csv_crlf_line_endings():
    table = parse("age,income,score\r\n1,2,3\r\n\r\n4,5,6\r\n")
    np.testing.assert_array_equal(table.values, [[1, 2, 3], [4, 5, 6]])
    assert table.line_numbers == [2, 4]


def test_csv_utf8_bom_is_stripped():
    table = parse(b"\xef\xbb\xbfage,income,score\n1,2,3\n")
    np.testing.assert_array_equal(table.values, [[1, 2, 3]])


def test_csv_quoted_fields_and_names():
    data = '"score", "age","income"\n"0.5", "30",  "1000"\n'
    table = parse(data)
    np.testing.assert_array_equal(table.values, [[30, 1000, 0.5]])


def test_csv_quoted_name_with_comma_and_line_numbers_after_multiline_field():
    features = ["a,b", "note"]
    data = '"a,b",note\n1,"2"\n"3","4\n"\n5,6\n'
    table = parse(data, features=features)
    np.testing.assert_array_equal(table.values, [[1, 2], [3, 4], [5, 6]])
    assert table.line_numbers == [2, 3, 5]  # the quoted field of row 2 spans lines 3-4


def test_csv_numeric_feature_names_are_a_valid_header():
    table = parse("1,0\n5,6\n", features=["0", "1"])
    np.testing.assert_array_equal(table.values, [[6, 5]])


def test_csv_exactly_max_rows_is_accepted():
    data = "age,income,score\n" + "1,2,3\n" * 5
    assert parse(data, max_rows=5).values.shape == (5, 3)


# --- CSV: errors --------------------------------------------------------------------------


def test_csv_missing_feature_columns():
    error = refused("age,score\n1,2\n")
    assert error.code == "invalid_table"
    assert error.details["missing"] == ["income"]
    assert error.details["unexpected"] == []
    assert "missing columns: 'income'" in error.message


def test_csv_unexpected_columns():
    error = refused("age,income,score,id,label\n1,2,3,4,5\n")
    assert error.details["unexpected"] == ["id", "label"]
    assert error.details["missing"] == []
    assert "unexpected columns: 'id', 'label'" in error.message


def test_csv_missing_and_unexpected_together_with_case_hint():
    error = refused("Age,income,score\n1,2,3\n")
    assert error.details["missing"] == ["age"]
    assert error.details["unexpected"] == ["Age"]
    assert "case-sensitive" in error.message


def test_csv_long_column_name_is_truncated():
    name = "x" * 500
    error = refused(f"age,income,score,{name}\n1,2,3,4\n")
    assert error.details["unexpected"] == ["x" * 37 + "..."]
    assert len(error.message) < 300


def test_csv_duplicate_column_names():
    error = refused("age,income,score,age\n1,2,3,4\n")
    assert "more than once" in error.message and "'age'" in error.message
    assert error.details["duplicates"] == ["age"]
    assert error.details["line"] == 1


def test_csv_unnamed_header_column():
    error = refused(",age,income,score\n0,1,2,3\n")
    assert "header column 1 has no name" in error.message
    assert error.details["column_number"] == 1


def test_csv_numeric_first_row_needs_a_header():
    error = refused("1,2,3\n4,5,6\n")
    assert "header row with the feature names is required" in error.message
    assert "age,income,score" in error.message
    assert error.details["line"] == 1


@pytest.mark.parametrize(
    ("row", "got", "hint"),
    [("1,2\n", 2, False), ("1,2,3,4\n", 4, False), ("1,2,3,\n", 4, True)],
)
def test_csv_row_with_wrong_field_count(row, got, hint):
    error = refused("age,income,score\n1,2,3\n\n" + row)
    assert error.details == {"line": 4, "expected": 3, "got": got}
    assert f"line 4 has {got} fields; expected 3" in error.message
    assert ("trailing comma" in error.message) is hint


@pytest.mark.parametrize("cell", ["", "  ", "nan", "NaN", "inf", "-inf", "Infinity", "1e400"])
def test_csv_missing_or_non_finite_value(cell):
    error = refused(f"age,income,score\n1,2,3\n4,{cell},6\n")
    assert "line 3, column 'income': missing or non-finite value" in error.message
    assert error.details["line"] == 3
    assert error.details["column"] == "income"


@pytest.mark.parametrize("cell", ["abc", "1,5", "12 years", "0x10", "$100"])
def test_csv_non_numeric_value(cell):
    quoted = '"' + cell + '"'
    error = refused(f"score,age,income\n0.5,{quoted},6\n")
    assert f"line 2, column 'age': '{cell}' is not a number" in error.message
    assert error.details == {"line": 2, "column": "age", "value": cell}


def test_csv_long_value_is_truncated_in_message_and_details():
    cell = "y" * 1000
    error = refused(f"age,income,score\n1,2,{cell}\n")
    assert error.details["value"] == "y" * 37 + "..."
    assert "y" * 41 not in error.message


def test_csv_malformed_quotes():
    error = refused('age,income,score\n1,2,3\n4,"5,6\n7,8,9\n')
    assert "line 3: malformed CSV" in error.message
    assert error.details["line"] == 3


def test_csv_too_many_rows_stops_reading_at_the_limit():
    # Row 4 is over the limit; the malformed row 5 after it is never read.
    data = "age,income,score\n" + "1,2,3\n" * 4 + "not,a,number\n"
    error = refused(data, max_rows=3, error=TableTooLargeError)
    assert error.code == "table_too_large"
    assert error.status == 413
    assert error.details == {"line": 5, "limit": 3}
    assert "more than 3 data rows" in error.message


# --- JSON Lines ---------------------------------------------------------------------------


def test_jsonl_objects_in_any_key_order():
    data = '{"score": 0.5, "age": 30, "income": 1000}\n{"age": 41, "income": -2.5e3, "score": 1}\n'
    table = parse(data, "rows.jsonl")
    assert table.format == "jsonl"
    np.testing.assert_array_equal(table.values, [[30, 1000, 0.5], [41, -2500, 1]])
    assert table.values.dtype == np.float64
    assert table.line_numbers == [1, 2]


def test_jsonl_arrays_and_mixed_lines_with_blank_lines_and_crlf():
    data = '\r\n[1, 2, 3]\r\n   \r\n{"age": 4, "income": 5, "score": 6}\r\n\r\n[7.5, 8, 9]'
    table = parse(data, "rows.ndjson")
    np.testing.assert_array_equal(table.values, [[1, 2, 3], [4, 5, 6], [7.5, 8, 9]])
    assert table.line_numbers == [2, 4, 6]


def test_jsonl_bom_and_unicode_line_separator_inside_a_key():
    features = ["a\u2028b", "c"]
    data = "\ufeff" + json.dumps({"a\u2028b": 1, "c": 2}, ensure_ascii=False) + "\n[3, 4]\n"
    table = parse(data, "rows.jsonl", features=features)
    np.testing.assert_array_equal(table.values, [[1, 2], [3, 4]])
    assert table.line_numbers == [1, 2]


def test_jsonl_huge_integer_is_non_finite():
    error = refused("[1, 2, 1" + "0" * 5000 + "]\n", "rows.jsonl")
    assert "missing or non-finite value" in error.message
    assert error.details["column"] == "score"


def test_jsonl_missing_and_unexpected_keys():
    error = refused('{"age": 1, "income": 2, "score": 3}\n{"age": 1, "score": 3, "id": 7}\n', "rows.jsonl")
    assert error.details["missing"] == ["income"]
    assert error.details["unexpected"] == ["id"]
    assert error.message.startswith("line 2 does not match the model's features")


def test_jsonl_duplicate_key():
    error = refused('{"age": 1, "income": 2, "score": 3, "age": 4}\n', "rows.jsonl")
    assert "'age' appears more than once" in error.message
    assert error.details == {"line": 1, "column": "age"}


def test_jsonl_array_of_wrong_length():
    error = refused("[1, 2, 3]\n[1, 2]\n", "rows.jsonl")
    assert error.details == {"line": 2, "expected": 3, "got": 2}
    assert "has 2 values; expected 3" in error.message


def test_jsonl_header_line_is_refused():
    error = refused('["age", "income", "score"]\n[1, 2, 3]\n', "rows.jsonl")
    assert "no header row" in error.message and error.details["line"] == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("NaN", "missing or non-finite value nan"),
        ("Infinity", "missing or non-finite value inf"),
        ("-Infinity", "missing or non-finite value -inf"),
        ("1e999", "missing or non-finite value inf"),
        ("null", "missing or non-finite value null"),
        ('"5"', "'5' is a string; write numbers without quotes"),
        ("true", "true is true/false, not a number"),
        ("[1]", "[1.0] is an array, not a number"),
        ('{"v": 1}', "is an object, not a number"),
    ],
)
def test_jsonl_values_must_be_finite_numbers(value, expected):
    data = '{"age": 1, "income": 2, "score": 3}\n{"age": 1, "income": ' + value + ', "score": 3}\n'
    error = refused(data, "x.jsonl")
    assert error.message.startswith("line 2, feature 'income': ")
    assert expected in error.message
    assert error.details["line"] == 2 and error.details["column"] == "income"


def test_jsonl_bool_in_array_is_refused():
    error = refused("[1, false, 3]\n", "rows.jsonl")
    assert "false is true/false, not a number" in error.message
    assert error.details["column"] == "income"


@pytest.mark.parametrize(
    "line",
    ['{"age": 1, "income": 2,', "age,income,score", "[", "{'age': 1}", '{"age": 1} {"age": 2}'],
)
def test_jsonl_invalid_json(line):
    error = refused("[1, 2, 3]\n\n" + line + "\n", "rows.jsonl")
    assert error.message.startswith("line 3 is not valid JSON (")
    assert error.details == {"line": 3}


def test_jsonl_deep_nesting_is_refused():
    error = refused("[" * 100_000 + "]" * 100_000 + "\n", "rows.jsonl")
    assert "nested too deeply" in error.message


@pytest.mark.parametrize(("line", "kind"), [('"text"', "a string"), ("42", "a number"), ("null", "null")])
def test_jsonl_other_json_types(line, kind):
    error = refused(line + "\n", "rows.jsonl")
    assert f"line 1: got {kind}" in error.message
    assert "expected a JSON object" in error.message


def test_jsonl_too_many_rows_stops_reading_at_the_limit():
    data = "[1, 2, 3]\n" * 3 + "\n" + "this is not json\n"
    error = refused(data, "rows.jsonl", max_rows=2, error=TableTooLargeError)
    assert error.details == {"line": 3, "limit": 2}


# --- both formats: size, emptiness, encoding ------------------------------------------------


@pytest.mark.parametrize("filename", ["t.csv", "t.jsonl"])
def test_too_many_bytes_is_checked_first(filename):
    data = b"\xff\x00" * 100  # neither text nor a table: the size is refused before anything else
    error = refused(data, filename, max_bytes=199, error=TableTooLargeError)
    assert error.details == {"size": 200, "limit": 199}
    assert "200 bytes; the limit is 199" in error.message


def test_size_limit_applies_before_the_format_check():
    error = refused(b"x" * 20, "t.xlsx", max_bytes=10, error=TableTooLargeError)
    assert error.code == "table_too_large"


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (b"", "t.csv"),
        (b"", "t.jsonl"),
        (b" \n\r\n\t\n", "t.csv"),
        (b"\xef\xbb\xbf", "t.csv"),
        (b"age,income,score\n", "t.csv"),
        (b"age,income,score\r\n\r\n  \r\n", "t.csv"),
        (b"\n\n   \n\r\n", "t.jsonl"),
    ],
)
def test_no_data_rows(data, filename):
    error = refused(data, filename)
    assert error.code == "invalid_table"
    assert "no data rows" in error.message


@pytest.mark.parametrize(
    ("data", "offset", "line"),
    [
        ("age,income,score\n1,2,3\n".encode("utf-16"), 0, 1),
        ("age,income,score\n1,2,3\n".encode("utf-32"), 0, 1),
        ("age,income,score\n1,2,café\n".encode("latin-1"), 24, 2),
        (b"\xef\xbb\xbfage,income,score\n\xff", 20, 2),
    ],
)
def test_not_utf8_text(data, offset, line):
    error = refused(data)
    assert "not UTF-8 text" in error.message
    assert f"byte offset {offset}" in error.message
    assert error.details == {"offset": offset, "line": line}


def test_not_utf8_names_utf16():
    error = refused("[1, 2, 3]\n".encode("utf-16"), "rows.jsonl")
    assert "UTF-16" in error.message


@pytest.mark.parametrize("filename", ["t.csv", "t.jsonl"])
def test_nul_byte_means_binary(filename):
    error = refused(b"age,income,score\n1,2\x00,3\n", filename)
    assert "NUL byte at byte offset 20" in error.message and "binary" in error.message
    assert error.details == {"offset": 20, "line": 2}


def test_utf16_without_bom_is_refused_as_binary():
    error = refused("age,income,score\n1,2,3\n".encode("utf-16-le"))
    assert "UTF-16" in error.message and error.details["offset"] == 1


def test_errors_serialise():
    error = refused("age,income,score\n1,x,3\n")
    record = error.to_dict()
    assert record["code"] == "invalid_table" and record["type"] == "InvalidTableError"
    assert json.loads(json.dumps(record))["details"] == {"line": 2, "column": "income", "value": "x"}


# --------------------------------------------------------------------------- names from the upload


def test_csv_header_names_the_features_when_the_card_does_not():
    table = parse_table(b"b,a\n1,2\n3,4\n", "t.csv", None, feature_count=2, max_bytes=1000, max_rows=10)
    assert table.feature_names == ["b", "a"]  # the file's order
    np.testing.assert_array_equal(table.values, [[1, 2], [3, 4]])


def test_jsonl_names_come_from_the_first_object_or_are_numbered_for_arrays():
    table = parse_table(b'{"y": 1, "x": 2}\n{"x": 4, "y": 3}\n', "t.jsonl", None, feature_count=2,
                        max_bytes=1000, max_rows=10)
    assert table.feature_names == ["y", "x"]
    np.testing.assert_array_equal(table.values, [[1, 2], [3, 4]])
    arrays = parse_table(b"[1, 2]\n[3, 4]\n", "t.jsonl", None, feature_count=2, max_bytes=1000, max_rows=10)
    assert arrays.feature_names == ["feature_0", "feature_1"]


@pytest.mark.parametrize(("data", "name", "message"), [
    (b"a,b,c\n1,2,3\n", "t.csv", "the header has 3 features; the model takes 2"),
    (b"1,2\n3,4\n", "t.csv", "a header row naming the columns is required"),
    (b'{"a": 1}\n', "t.jsonl", "the object has 1 features; the model takes 2"),
    (b'{"a": 1, "b": 2}\n{"a": 1, "c": 2}\n', "t.jsonl", "c"),
])
def test_upload_names_must_match_the_model_width_and_stay_consistent(data, name, message):
    with pytest.raises(InvalidTableError) as info:
        parse_table(data, name, None, feature_count=2, max_bytes=1000, max_rows=10)
    assert message in info.value.message
