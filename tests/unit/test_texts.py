"""Unit tests for explain_core.texts: .txt, JSON Lines and CSV uploads parsed into documents."""

import csv
import io
import json

import pytest

from explain_core.errors import (
    DocumentTooLongError,
    InvalidTextError,
    TextTooLargeError,
    UnsupportedTextFormatError,
)
from explain_core.texts import (
    SUPPORTED_EXTENSIONS,
    Document,
    TextFile,
    encode_documents,
    parse_texts,
    text_format,
)
from explain_core.tokenizers import WordTokenizer

LIMITS = {"max_bytes": 1024 * 1024, "max_documents": 100}
VOCABULARY = ["", "[UNK]", "the", "café", "good", "bad", "movie", "👍"]


def parse(data: bytes | str, filename: str = "upload.txt", **limits) -> TextFile:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return parse_texts(data, filename, **{**LIMITS, **limits})


def refused(data: bytes | str, filename: str = "upload.txt", error=InvalidTextError, line: int | None = None,
            **limits) -> InvalidTextError:
    """Parse expecting a refusal of exactly type ``error`` naming ``line``; return the error."""
    with pytest.raises(InvalidTextError) as info:
        parse(data, filename, **limits)
    assert type(info.value) is error
    if line is not None:
        assert info.value.details["line"] == line
        assert f"line {line}" in info.value.message
    return info.value


def texts(result: TextFile) -> list[tuple[str, int]]:
    return [(d.text, d.line) for d in result.documents]


# --- text_format --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "fmt"),
    [("a.txt", "txt"), ("A.TXT", "txt"), ("in/x/rows.JsonL", "jsonl"), ("r.ndjson", "jsonl"), ("r.v2.csv", "csv")],
)
def test_text_format_by_extension(filename, fmt):
    assert text_format(filename) == fmt


@pytest.mark.parametrize("filename", ["a.json", "a.md", "README", "a.txt.gz", "a.tsv", "a.docx"])
def test_text_format_refuses_other_extensions(filename):
    with pytest.raises(UnsupportedTextFormatError) as info:
        text_format(filename)
    error = info.value
    assert (error.code, error.status) == ("unsupported_text_format", 415)
    assert isinstance(error, InvalidTextError)
    for extension in SUPPORTED_EXTENSIONS:
        assert extension in error.message
    assert error.details["supported"] == [".txt", ".jsonl", ".ndjson", ".csv"]


def test_text_format_names_the_extension_or_its_absence():
    with pytest.raises(UnsupportedTextFormatError) as info:
        text_format("dir\\notes.DOCX")
    assert "'.docx'" in info.value.message and "'notes.DOCX'" in info.value.message
    assert info.value.details["extension"] == ".docx"
    with pytest.raises(UnsupportedTextFormatError) as info:
        text_format("incoming/x/README")
    assert "no extension" in info.value.message


def test_parse_refuses_an_unsupported_extension_before_reading():
    refused(b"\x00\x01", "photo.png", error=UnsupportedTextFormatError)


# --- .txt ---------------------------------------------------------------------------------


def test_txt_is_one_document_kept_as_is():
    text = "  First line, café.\r\nSecond 👍 line 日本語\n\n"
    result = parse(text)
    assert result.format == "txt"
    assert result.documents == [Document(text=text, line=1)]


def test_txt_utf8_bom_is_stripped():
    assert texts(parse(b"\xef\xbb\xbfhello")) == [("hello", 1)]


@pytest.mark.parametrize("data", [b"", b" \r\n\t\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf  \n"])
def test_txt_empty_or_blank_is_refused(data):
    error = refused(data)
    assert error.code == "invalid_text" and error.status == 422
    assert "empty" in error.message or "only whitespace" in error.message


# --- decoding -----------------------------------------------------------------------------


@pytest.mark.parametrize("filename", ["a.txt", "a.jsonl", "a.csv"])
def test_nul_byte_is_binary_with_offset_and_line(filename):
    error = refused(b"text\nok\nab\x00cd", filename)
    assert error.details == {"offset": 10, "line": 3}
    assert "NUL byte at byte offset 10" in error.message


def test_utf16_with_bom_is_named():
    error = refused("text\nhello".encode("utf-16"), "a.csv")
    assert "UTF-16" in error.message
    assert error.details == {"offset": 0, "line": 1}


def test_utf16_without_bom_is_binary():
    error = refused("hello".encode("utf-16-le"))
    assert "NUL" in error.message


def test_invalid_utf8_names_byte_offset_and_line():
    data = "text\ncafé\n".encode("latin-1") + b"more"
    error = refused(data, "a.csv")
    assert error.details == {"offset": 8, "line": 2}
    assert "0xe9" in error.message and "UTF-8" in error.message


def test_invalid_utf8_offset_counts_the_bom():
    error = refused(b"\xef\xbb\xbfab\xff")
    assert error.details["offset"] == 5


# --- JSON Lines ---------------------------------------------------------------------------


def test_jsonl_objects_and_strings_with_line_numbers():
    lines = [
        json.dumps({"id": 1, "text": "Good movie", "label": [1, 2]}),
        "",
        "   ",
        json.dumps("a bare string"),
        json.dumps({"text": "café 👍 日本語"}, ensure_ascii=False),
        json.dumps({"text": "escaped café 👍"}),  # \u escapes, surrogate pairs included
    ]
    result = parse("\n".join(lines) + "\n", "a.jsonl")
    assert result.format == "jsonl"
    assert texts(result) == [
        ("Good movie", 1), ("a bare string", 4), ("café 👍 日本語", 5), ("escaped café 👍", 6)]


def test_jsonl_crlf_and_bom_and_ndjson():
    data = b"\xef\xbb\xbf" + b'{"text": "one"}\r\n"two"\r\n'
    assert texts(parse(data, "a.ndjson")) == [("one", 1), ("two", 2)]


def test_jsonl_splits_on_newline_only():
    # U+2028 inside a JSON string is not a line break.
    result = parse(json.dumps({"text": "a\u2028b"}, ensure_ascii=False) + "\n" + '"c"', "a.jsonl")
    assert texts(result) == [("a\u2028b", 1), ("c", 2)]


def test_jsonl_invalid_json_names_the_line():
    error = refused('"ok"\n{"text": "unterminated\n', "a.jsonl", line=2)
    assert "not valid JSON" in error.message


def test_jsonl_truncated_object_points_at_its_end():
    error = refused('{"text": "a"', "a.jsonl", line=1)
    assert "column 13" in error.message


@pytest.mark.parametrize(
    ("line", "found"),
    [("3", "a number"), ("[\"a\"]", "an array"), ("null", "null"), ("true", "true/false")],
)
def test_jsonl_other_values_are_refused_saying_what_was_found(line, found):
    error = refused(f'"ok"\n{line}\n', "a.jsonl", line=2)
    assert found in error.message
    assert error.details["found"] == found


def test_jsonl_missing_text_lists_the_keys():
    error = refused('{"body": "x", "id": 3}\n', "a.jsonl", line=1)
    assert "'body', 'id'" in error.message
    assert error.details["keys"] == ["body", "id"]


def test_jsonl_text_key_is_case_sensitive_and_says_so():
    error = refused('{"Text": "x"}\n', "a.jsonl", line=1)
    assert "case-sensitive" in error.message


def test_jsonl_empty_object():
    error = refused("{}\n", "a.jsonl", line=1)
    assert "empty" in error.message


@pytest.mark.parametrize(("value", "found"), [("3", "a number"), ("null", "null"), ('["a"]', "an array"),
                                              ('{"a": 1}', "an object"), ("false", "true/false")])
def test_jsonl_non_string_text_is_refused(value, found):
    error = refused(f'"ok"\n"ok"\n{{"text": {value}}}\n', "a.jsonl", line=3)
    assert found in error.message


@pytest.mark.parametrize("value", ['""', '"   "', '"\\n\\t"'])
def test_jsonl_empty_text_is_refused(value):
    error = refused(f'{{"text": "x"}}\n{{"text": {value}}}\n', "a.jsonl", line=2)
    assert "empty" in error.message


def test_jsonl_empty_string_line_is_refused():
    refused('""\n', "a.jsonl", line=1)


def test_jsonl_duplicate_text_key_is_refused():
    error = refused('{"text": "a", "text": "b"}\n', "a.jsonl", line=1)
    assert "more than once" in error.message


def test_jsonl_duplicate_other_keys_are_ignored():
    assert texts(parse('{"id": 1, "id": 2, "text": "x", "meta": {"text": 1, "text": 2}}', "a.jsonl")) == [("x", 1)]


@pytest.mark.parametrize("escape", ["\\u0000", "\\ud800", "\\udc00"])
def test_jsonl_escapes_that_are_not_text_are_refused(escape):
    error = refused(f'"ok"\n{{"text": "ab{escape}"}}\n', "a.jsonl", line=2)
    assert "character 2" in error.message


def test_jsonl_deep_nesting_is_refused():
    refused("[" * 100_000 + "]" * 100_000, "a.jsonl", line=1)


def test_jsonl_blank_file_has_no_documents():
    error = refused("\n \n\r\n", "a.jsonl")
    assert "no documents" in error.message


# --- CSV ----------------------------------------------------------------------------------


def test_csv_text_column_any_case_other_columns_ignored():
    result = parse('id, TEXT ,label\n1,Good movie,pos\n2,"Bad, bad movie",neg\n', "a.csv")
    assert result.format == "csv"
    assert texts(result) == [("Good movie", 2), ("Bad, bad movie", 3)]


def test_csv_multiline_cells_keep_physical_line_numbers():
    data = 'id,text\r\n1,"first\r\nsecond\r\nthird"\r\n2,after\r\n3,"x\n\ny"\n4,last\n'
    result = parse(data, "a.csv")
    assert texts(result) == [("first\r\nsecond\r\nthird", 2), ("after", 5), ("x\n\ny", 6), ("last", 9)]


def test_csv_line_after_multiline_cell_is_named_in_refusals():
    error = refused('text,id\n"a\nb\nc",1\n,2\n', "a.csv", line=5)
    assert "empty" in error.message and "'text'" in error.message


def test_csv_bom_blank_lines_and_quotes():
    data = b"\xef\xbb\xbf" + 'text\n\n"He said ""hi"""\n,\n"café 👍 日本語"\n'.encode()
    assert texts(parse(data, "a.csv")) == [('He said "hi"', 3), ("café 👍 日本語", 5)]


def test_csv_written_by_the_csv_module_round_trips():
    rows = [["id", "text"], ["1", 'quote " and, comma'], ["2", "line\nbreak"], ["3", "trailing  "]]
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    assert texts(parse(out.getvalue(), "a.csv")) == [('quote " and, comma', 2), ("line\nbreak", 3),
                                                      ("trailing  ", 5)]


def test_csv_space_after_a_comma_is_not_part_of_the_cell_unless_quoted():
    # As for tables: `1, "a, b"` is two cells; quoting keeps leading spaces.
    assert texts(parse('id,text\n1, "a, b"\n2,  plain\n3,"  kept"\n', "a.csv")) == [
        ("a, b", 2), ("plain", 3), ("  kept", 4)]


def test_csv_missing_text_column_lists_the_columns():
    error = refused("\n\nid,body\n1,x\n", "a.csv", line=3)
    assert "'id', 'body'" in error.message
    assert error.details["columns"] == ["id", "body"]


def test_csv_two_text_columns_are_refused():
    refused("text,Text\na,b\n", "a.csv", line=1)


@pytest.mark.parametrize("cell", ["", "   ", '""', '"  "'])
def test_csv_empty_text_cell_is_refused(cell):
    refused(f"id,text\n1,ok\n2,{cell}\n", "a.csv", line=3)


@pytest.mark.parametrize(("row", "got", "hint"), [("1,a,b", 3, "quoted"), ("1,a,", 3, "trailing comma"),
                                                   ("1", 1, "")])
def test_csv_wrong_number_of_cells_is_refused(row, got, hint):
    error = refused(f"id,text\n1,ok\n{row}\n", "a.csv", line=3)
    assert error.details["expected"] == 2 and error.details["got"] == got
    assert hint in error.message


def test_csv_unclosed_quote_names_where_the_row_starts():
    refused('text\nok\n"never closed\nmore\n', "a.csv", line=3)


def test_csv_stray_quote_is_refused():
    refused('text\nok\n"ab"c\n', "a.csv", line=3)


def test_csv_over_long_cell_is_document_too_long():
    error = refused("text\nok\n" + "x" * (csv.field_size_limit() + 1) + "\n", "a.csv", error=DocumentTooLongError,
                    line=3)
    assert error.code == "document_too_long" and error.status == 413


@pytest.mark.parametrize(("data", "what"), [("", "0 bytes"), ("\n\n", "empty or blank"), ("text\n\n", "header")])
def test_csv_without_documents(data, what):
    error = refused(data, "a.csv")
    assert what in error.message


# --- limits -------------------------------------------------------------------------------


@pytest.mark.parametrize("filename", ["a.txt", "a.jsonl", "a.csv"])
def test_byte_limit_exactly_and_one_over(filename):
    data = b'"abc"\n' if filename != "a.csv" else b"text\nabc\n"
    assert parse(data, filename, max_bytes=len(data)).documents
    error = refused(data, filename, error=TextTooLargeError, max_bytes=len(data) - 1)
    assert (error.code, error.status) == ("text_too_large", 413)
    assert error.details == {"size": len(data), "limit": len(data) - 1}


def test_byte_limit_is_checked_before_decoding():
    error = refused(b"\x00" * 10, "a.txt", error=TextTooLargeError, max_bytes=9)
    assert "10 bytes" in error.message


def test_jsonl_document_limit_exactly_and_one_over():
    data = '"a"\n\n"b"\n"c"\n'
    assert len(parse(data, "a.jsonl", max_documents=3).documents) == 3
    error = refused(data, "a.jsonl", error=TextTooLargeError, line=4, max_documents=2)
    assert error.details["limit"] == 2
    assert "more than 2 documents" in error.message


def test_csv_document_limit_exactly_and_one_over():
    data = 'text\na\n"b\nb"\nc\n'
    assert len(parse(data, "a.csv", max_documents=3).documents) == 3
    refused(data, "a.csv", error=TextTooLargeError, line=5, max_documents=2)


def test_document_limit_stops_reading_before_later_errors():
    # The fourth line is not JSON, but reading stops at the document over the limit.
    refused('"a"\n"b"\nnot json\n', "a.jsonl", error=TextTooLargeError, line=2, max_documents=1)


# --- encode_documents ---------------------------------------------------------------------


@pytest.fixture
def tokenizer():
    return WordTokenizer(VOCABULARY, max_length=4)


def test_encode_documents_keeps_offsets_in_unicode_text(tokenizer):
    text = "日本語 — The CAFÉ, 👍 good!"
    (document,) = parse(json.dumps({"text": text}), "a.jsonl").documents
    (encoded,) = encode_documents([document], tokenizer, max_tokens=10)
    # The JSON round trip (\u escapes, a surrogate pair for the emoji) leaves the offsets on the original text.
    assert [text[t.start:t.end] for t in encoded.tokens] == ["日本語", "—", "The", "CAFÉ", "👍", "good"]
    assert [t.id for t in encoded.tokens] == [1, 1, 2, 3, 7, 4]
    assert encoded.ids.tolist() == [1, 1, 2, 3]  # max_length 4: the last two tokens are truncated
    assert encoded.truncated == 2


def test_encode_documents_token_limit_exactly_and_one_over(tokenizer):
    documents = parse("text\ngood movie\n\"the\nbad movie\"\n", "a.csv").documents
    assert len(encode_documents(documents, tokenizer, max_tokens=3)) == 2
    with pytest.raises(DocumentTooLongError) as info:
        encode_documents(documents, tokenizer, max_tokens=2)
    error = info.value
    assert (error.code, error.status) == ("document_too_long", 413)
    # Tokenizing stopped at the third token ("movie" of "the\nbad movie"): where the limit was passed.
    assert error.details == {"line": 3, "document": 2, "limit": 2, "offset": 8}
    assert error.message == ("line 3: the document has more than 2 tokens (token 3 starts at character 8); "
                             "the limit is 2 per document")


def test_encode_documents_stops_tokenizing_at_the_limit():
    calls = []

    class Counting(WordTokenizer):
        def _add(self, text, start, end, found):
            calls.append(start)
            super()._add(text, start, end, found)

    counting = Counting(VOCABULARY, max_length=4)
    with pytest.raises(DocumentTooLongError, match="more than 5 tokens"):
        encode_documents([Document("good " * 100_000, 1)], counting, max_tokens=5)
    assert len(calls) == 6  # not 100 000 pieces: the document is refused after its sixth token


def test_encode_documents_refuses_a_document_without_words(tokenizer):
    documents = [Document("good", 1), Document(" ... !!! -- ", 7)]
    with pytest.raises(InvalidTextError) as info:
        encode_documents(documents, tokenizer, max_tokens=10)
    assert type(info.value) is InvalidTextError
    assert info.value.message.startswith("line 7: no words the model can read")
    assert info.value.details["line"] == 7


def test_encode_documents_unknown_words_still_count(tokenizer):
    (encoded,) = encode_documents([Document("zzz qqq", 1)], tokenizer, max_tokens=2)
    assert encoded.ids.tolist() == [1, 1, 0, 0]
