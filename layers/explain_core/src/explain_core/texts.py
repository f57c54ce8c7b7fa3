"""Text uploads (.txt, JSON Lines, CSV) parsed into documents for a text model.

- ``.txt``: the whole file is one document (starting on line 1).
- ``.jsonl``/``.ndjson``: each non-blank line is an object with a string field ``"text"`` (other
  fields are ignored) or a JSON string.
- ``.csv``: a header row with a ``text`` column (any case); each data row's cell in it is a document
  (blank rows are skipped; as for tables, spaces after a comma are dropped unless the cell is quoted).

Limits are checked before any work: the byte size before decoding, the document count while
reading (reading stops at the first document over the limit), the tokens of each document when it
is encoded (tokenizing stops at the first token over the limit). Every refusal is an
:class:`InvalidTextError` (or subclass) whose message names the line where the document starts and
what was found there.
"""

import csv
import io
import json
import re
from dataclasses import dataclass

from explain_core.errors import (
    DocumentTooLongError,
    InvalidTextError,
    TextTooLargeError,
    UnsupportedTextFormatError,
)
from explain_core.uploaded_files import clip, decode_utf8, file_format, jsonl_items, show

#: File extensions (lower case) and the format each one means.
SUPPORTED_EXTENSIONS = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}

#: The CSV column (matched stripped and case-insensitively) and the JSON field holding a document.
TEXT_FIELD = "text"
_MAX_LISTED = 10
#: Characters only JSON escapes can produce ("\u0000", "\ud800"): a NUL, or a lone surrogate that
#: cannot be written back as UTF-8 in the outputs.
_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")


@dataclass
class Document:
    text: str
    line: int  # 1-based line of the file where the document starts (1 for .txt)


@dataclass
class TextFile:
    documents: list[Document]
    format: str  # "txt", "jsonl" or "csv"


def text_format(filename: str) -> str:
    """The text format named by ``filename``'s extension (case-insensitive)."""
    return file_format(filename, SUPPORTED_EXTENSIONS, UnsupportedTextFormatError,
                       "texts must be plain text, JSON Lines or CSV files")


def parse_texts(data: bytes, filename: str, *, max_bytes: int, max_documents: int) -> TextFile:
    """Parse an uploaded text file into documents, or raise a typed error naming the line."""
    if len(data) > max_bytes:
        raise TextTooLargeError(
            f"the file is {len(data)} bytes; the limit is {max_bytes}", size=len(data), limit=max_bytes
        )
    fmt = text_format(filename)
    if not data:
        raise InvalidTextError("the file is empty (0 bytes): it has no documents")
    text = decode_utf8(
        data,
        InvalidTextError,
        encoding_advice="save the file as UTF-8 (in Excel: 'CSV UTF-8'; in Notepad: encoding 'UTF-8')",
        binary_advice="upload a UTF-8 text, JSON Lines or CSV file",
    )
    if fmt == "txt":
        documents = _parse_txt(text)
    elif fmt == "jsonl":
        documents = _parse_jsonl(text, max_documents)
    else:
        documents = _parse_csv(text, max_documents)
    return TextFile(documents=documents, format=fmt)


def encode_documents(documents: list[Document], tokenizer, *, max_tokens: int) -> list:
    """``tokenizer.encode`` of each document (a list of ``Encoded``); refuses too many tokens or none.

    Tokenizing stops at the first token over ``max_tokens``: a long document is refused without
    building all its tokens, so the error says "more than" the limit and where the limit was passed.
    """
    encoded = []
    for number, document in enumerate(documents, start=1):
        result = tokenizer.encode(document.text, limit=max_tokens)
        count = len(result.tokens)
        if count > max_tokens:
            over = result.tokens[max_tokens].start
            raise DocumentTooLongError(
                f"line {document.line}: the document has more than {max_tokens} tokens (token {max_tokens + 1} "
                f"starts at character {over}); the limit is {max_tokens} per document",
                line=document.line,
                document=number,
                limit=max_tokens,
                offset=over,
            )
        if count == 0:
            raise InvalidTextError(
                f"line {document.line}: no words the model can read in {show(document.text)} "
                "(only punctuation or separators)",
                line=document.line,
                document=number,
                text=clip(document.text),
            )
        encoded.append(result)
    return encoded


# --- documents ----------------------------------------------------------------------------


def _check_count(count: int, max_documents: int, line: int) -> None:
    if count > max_documents:
        raise TextTooLargeError(
            f"the file has more than {max_documents} documents (line {line} starts document {count}); "
            f"the limit is {max_documents} per file",
            line=line,
            limit=max_documents,
        )


def _document(text: str, line: int, where: str) -> Document:
    if not text.strip():
        raise InvalidTextError(
            f"line {line}: {where} is empty{' (only whitespace)' if text else ''}; every document needs text",
            line=line,
        )
    # Only reachable through JSON escapes: raw NUL bytes and invalid UTF-8 are refused when decoding.
    bad = _NOT_TEXT.search(text)
    if bad:
        raise InvalidTextError(
            f"line {line}: {where} holds the character U+{ord(bad.group()):04X} at character {bad.start()}, "
            "which is not text (an unpaired surrogate or NUL)",
            line=line,
            character=bad.start(),
        )
    return Document(text=text, line=line)


def _no_documents(what: str) -> InvalidTextError:
    return InvalidTextError(f"the file has no documents ({what})")


def _parse_txt(text: str) -> list[Document]:
    if not text.strip():
        raise InvalidTextError("the file holds only whitespace: it has no text to explain", line=1)
    return [Document(text=text, line=1)]


# --- JSON Lines ---------------------------------------------------------------------------


class _Pairs(list):
    """A JSON object as its (key, value) pairs: duplicate keys stay visible."""


_JSON_TYPES = {_Pairs: "an object", list: "an array", str: "a string", bool: "true/false", type(None): "null"}


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), "a number")


def _parse_jsonl(text: str, max_documents: int) -> list[Document]:
    documents: list[Document] = []
    for number, line, item in jsonl_items(text, InvalidTextError, 'an object with a "text" field, or a JSON string',
                                          lambda count, number: _check_count(count, max_documents, number),
                                          object_pairs_hook=_Pairs):
        if isinstance(item, str):
            documents.append(_document(item, number, "the string"))
        elif isinstance(item, _Pairs):
            documents.append(_jsonl_object(item, number))
        else:
            raise InvalidTextError(
                f"line {number}: got {_json_type(item)} ({show(line.strip())}); expected a JSON object with a "
                '"text" field, or a JSON string',
                line=number,
                found=_json_type(item),
            )
    if not documents:
        raise _no_documents("it is empty or blank")
    return documents


def _jsonl_object(pairs: _Pairs, number: int) -> Document:
    values = [value for key, value in pairs if key == TEXT_FIELD]
    if not values:
        keys = [key for key, _ in pairs]
        found = f"its keys are {', '.join(show(k) for k in keys[:_MAX_LISTED])}" if keys else "it is empty"
        if len(keys) > _MAX_LISTED:
            found += f" and {len(keys) - _MAX_LISTED} more"
        hint = next((f" (keys are case-sensitive: {show(k)})" for k in keys if k.strip().lower() == TEXT_FIELD), "")
        raise InvalidTextError(
            f'line {number}: the object has no "text" field{hint}; {found}',
            line=number,
            keys=[clip(k) for k in keys[:100]],
        )
    if len(values) > 1:
        raise InvalidTextError(
            f'line {number}: the key "text" appears more than once; each object holds one document', line=number
        )
    (value,) = values
    if not isinstance(value, str):
        raise InvalidTextError(
            f'line {number}: "text" is {_json_type(value)} ({clip(json.dumps(value))}); expected a string',
            line=number,
            found=_json_type(value),
        )
    return _document(value, number, 'the "text" field')


# --- CSV ----------------------------------------------------------------------------------


def _parse_csv(text: str, max_documents: int) -> list[Document]:
    # newline="" keeps quoted line breaks and lets the csv module handle \r\n itself; line_num then
    # counts physical lines, so a row's line is where it starts even after a multi-line cell.
    # skipinitialspace reads `1, "a, b"` as two fields; strict refuses stray quotes.
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True, strict=True)
    header: list[str] | None = None
    column = -1
    documents: list[Document] = []
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                limit = csv.field_size_limit()
                raise DocumentTooLongError(
                    f"line {start}: a cell holds more than {limit} characters; split the document",
                    line=start,
                    characters_limit=limit,
                ) from None
            raise InvalidTextError(
                f"line {start}: malformed CSV ({exc}); check for an unclosed or stray quote "
                "(a cell holding commas, quotes or line breaks must be quoted, with inner quotes doubled)",
                line=start,
            ) from None
        if all(not cell.strip() for cell in cells):
            continue  # blank line (or a row of empty cells, as spreadsheets leave at the end)
        if header is None:
            header = cells
            column = _csv_header(header, start)
            continue
        _check_count(len(documents) + 1, max_documents, start)
        if len(cells) != len(header):
            extra = cells[len(header) :]
            if extra and not any(c.strip() for c in extra):
                hint = " (a trailing comma?)"
            elif extra:
                hint = " (a cell holding a comma must be quoted)"
            else:
                hint = ""
            raise InvalidTextError(
                f"line {start} has {len(cells)} fields; expected {len(header)}, one per header column{hint}",
                line=start,
                expected=len(header),
                got=len(cells),
            )
        documents.append(_document(cells[column], start, f"the {show(header[column].strip())} cell"))
    if header is None:
        raise _no_documents("it is empty or blank")
    if not documents:
        raise _no_documents("only a header row")
    return documents


def _csv_header(header: list[str], line: int) -> int:
    """The index of the text column in the header row at ``line``."""
    names = [cell.strip() for cell in header]
    found = [i for i, name in enumerate(names) if name.lower() == TEXT_FIELD]
    if len(found) > 1:
        raise InvalidTextError(
            f"line {line}: the header has {len(found)} columns named {TEXT_FIELD!r} (any case); keep one",
            line=line,
        )
    if not found:
        listed = ", ".join(show(n) for n in names[:_MAX_LISTED])
        if len(names) > _MAX_LISTED:
            listed += f" and {len(names) - _MAX_LISTED} more"
        raise InvalidTextError(
            f"line {line}: the header has no {TEXT_FIELD!r} column (found {listed}); the first row must name "
            f"the columns, one of them {TEXT_FIELD!r}",
            line=line,
            columns=[clip(n) for n in names[:100]],
        )
    return found[0]
