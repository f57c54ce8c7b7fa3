"""What the parsers of uploaded files share (tables.py, texts.py): the format named by the extension,
UTF-8 decoding and JSON Lines reading with the errors people can act on, and user values cut short
for messages."""

import io
import json
from collections.abc import Callable, Iterator

from explain_core.errors import ExplainError

UTF8_BOM = b"\xef\xbb\xbf"
#: Byte-order marks of encodings users sometimes save as ("Unicode text" in Excel, Notepad).
OTHER_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
#: Offending values are shown (and put in details) cut to this many characters.
MAX_SHOWN = 40


def clip(value: str, limit: int = MAX_SHOWN) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def show(value: str) -> str:
    """A user's value for a message: quoted and cut to about 40 characters."""
    return repr(clip(value))


def file_format(filename: str, supported: dict[str, str], error: type[ExplainError], expected: str) -> str:
    """The format ``supported`` maps ``filename``'s extension to (case-insensitive); else ``error`` saying
    what was ``expected`` (e.g. "tables must be CSV or JSON Lines files")."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    dot = base.rfind(".")
    extension = base[dot:].lower() if dot >= 0 else ""
    if extension in supported:
        return supported[extension]
    what = f"extension {show(extension)}" if extension else "no extension"
    raise error(
        f"the file {show(base)} has {what}; {expected} named with one of: {', '.join(supported)}",
        filename=clip(base), extension=clip(extension), supported=list(supported),
    )


def decode_utf8(data: bytes, error: type[ExplainError], *, encoding_advice: str, binary_advice: str) -> str:
    """UTF-8 text without a BOM; other encodings and binary data raise ``error`` with the byte offset and line.

    ``encoding_advice`` ends the message about invalid UTF-8, ``binary_advice`` the one about a NUL byte.
    """
    skipped = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
    try:
        text = data[skipped:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skipped + exc.start
        line = data.count(b"\n", 0, offset) + 1
        hint = next((f" (it looks like {name} text)" for bom, name in OTHER_BOMS if data.startswith(bom)), "")
        raise error(
            f"the file is not UTF-8 text{hint}: byte {data[offset]:#04x} at byte offset {offset} (line {line}) "
            f"is not valid UTF-8; {encoding_advice}",
            offset=offset,
            line=line,
        ) from None
    nul = data.find(b"\x00")
    if nul >= 0:
        raise error(
            f"the file contains a NUL byte at byte offset {nul}: it is a binary file, or text saved as "
            f"UTF-16/UTF-32; {binary_advice}",
            offset=nul,
            line=data.count(b"\n", 0, nul) + 1,
        )
    return text


class DuplicateKeyError(ValueError):
    """A JSON object that names a key twice (raised by an ``object_pairs_hook``)."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def jsonl_items(text: str, error: type[ExplainError], expected: str, check_count: Callable[[int, int], None],
                **loads) -> Iterator[tuple[int, str, object]]:
    """(line number, line, parsed value) of each non-blank line of JSON Lines ``text``.

    ``check_count(count, line)`` runs before a line is parsed, so a limit stops reading early; a line
    that is not JSON, nests too deeply or names a key twice raises ``error`` saying what was
    ``expected`` (e.g. 'an object with a "text" field'). ``loads`` go to :func:`json.loads`.
    """
    count = 0
    # newline="\n": split on \n only (a JSON string may hold U+2028 and friends); a trailing \r is JSON whitespace.
    for number, line in enumerate(io.StringIO(text, newline="\n"), start=1):
        if not line.strip():
            continue
        count += 1
        check_count(count, number)
        try:
            # Without the line break, a truncated line's error points at its end, not at "column 1".
            item = json.loads(line.rstrip("\r\n"), **loads)
        except DuplicateKeyError as exc:
            raise error(f"line {number}: the key {show(exc.key)} appears more than once; expected {expected}",
                        line=number, column=clip(exc.key)) from None
        except RecursionError:
            raise error(f"line {number}: the JSON is nested too deeply; expected {expected}", line=number) from None
        except ValueError as exc:
            reason = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise error(f"line {number} is not valid JSON ({clip(reason, 80)}); each line must hold one complete "
                        f"JSON value: {expected}", line=number) from None
        yield number, line, item
