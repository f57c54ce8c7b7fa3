"""Unpacking a model archive (SageMaker's ``model.tar.gz``) safely, once, inside the model cache.

A training job's artifact is a gzip-compressed tar that the store downloads into the /tmp model cache.
Python's ``tarfile.extractall`` trusts the archive: a member named ``/etc/x`` or ``../../x``, a symbolic
or hard link pointing out of the folder, a device or FIFO, or a gzip bomb would write outside the cache
or fill /tmp (CVE-2007-4559 and its many descendants). Here, before a byte is written:

1. the whole gzip stream is decompressed once and counted: at most ``max_bytes`` unpacked and at most
   :data:`MAX_COMPRESSION_RATIO` times the archive's size (so tarfile never parses a bomb);
2. every member is checked: a regular file or a directory only, a relative path without ``..``, no
   duplicate, at most :data:`MAX_MEMBERS` members and :data:`MAX_PATH_DEPTH` levels;

then each file is written by this module (never ``extractall``) below a fresh folder beside the final
one, with ``O_EXCL | O_NOFOLLOW`` and modes of our own (no setuid bit, no owner from the archive), and
the folder is renamed into place only when complete. Anything refused leaves nothing behind.
"""

import contextlib
import errno
import gzip
import os
import shutil
import stat
import tarfile
import uuid
import zlib
from pathlib import PurePosixPath

from explain_core.errors import InvalidModelError, ModelTooLargeError, UnsafeModelError

#: Members (files and folders) of one archive: a SavedModel has a handful, a sharded checkpoint dozens.
MAX_MEMBERS = 10_000
#: Unpacked bytes per archive byte. Trained weights compress little (1.1-2x); 100x only comes from runs of
#: zeros: a decompression bomb (gzip reaches about 1000x).
MAX_COMPRESSION_RATIO = 100
#: Folder levels of a member's path, and its length.
MAX_PATH_DEPTH = 32
MAX_PATH_CHARS = 1024
#: The marker written last in an unpacked folder: a folder without it was never finished.
UNPACKED_MARKER = ".unpacked"
_CHUNK = 1024 * 1024


def unpack_archive(archive: str, destination: str, *, max_bytes: int, name: str, version: str) -> str:
    """``archive`` (a ``.tar.gz``) unpacked into the folder ``destination``; returns ``destination``.

    Done once: a complete ``destination`` (it holds :data:`UNPACKED_MARKER`) is returned as it is. Raises
    UnsafeModelError for a member that could write outside ``destination`` (absolute path, ``..``, link,
    device), ModelTooLargeError over the size or ratio limits, InvalidModelError for a file that is not a
    gzip-compressed tar. Nothing is left in the cache when it raises.
    """
    if os.path.exists(os.path.join(destination, UNPACKED_MARKER)):
        return destination
    shutil.rmtree(destination, ignore_errors=True)  # an unfinished unpack of an earlier process
    unpacked = _check_stream(archive, max_bytes, name, version)
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(destination))).free
    if unpacked > free:
        raise ModelTooLargeError(f"model {name}/{version}: model.tar.gz unpacks to {unpacked} bytes and /tmp has "
                                 f"{free} free; raise EphemeralStorageMB", model=name, version=version)
    partial = f"{destination}.partial-{uuid.uuid4().hex[:8]}"
    try:
        os.makedirs(partial, mode=0o700)
        with tarfile.open(archive, mode="r:gz") as tar:
            members = _checked_members(tar, max_bytes, name, version)
            for member, parts in members:
                _write_member(tar, member, os.path.join(partial, *parts), name, version)
        with open(os.path.join(partial, UNPACKED_MARKER), "w") as marker:
            marker.write(os.path.basename(archive))
        try:
            os.rename(partial, destination)
        except OSError:  # another process finished first: its folder is the same archive's
            if not os.path.exists(os.path.join(destination, UNPACKED_MARKER)):
                raise
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InvalidModelError(f"model {name}/{version}: model.tar.gz is not a valid gzip-compressed tar archive: "
                                f"{exc}", model=name, version=version) from exc
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise ModelTooLargeError(f"model {name}/{version}: no space left in /tmp while unpacking model.tar.gz; raise "
                                 "EphemeralStorageMB or use a smaller model", model=name, version=version) from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return destination


def _check_stream(archive: str, max_bytes: int, name: str, version: str) -> int:
    """Decompress the archive once, counting, before tarfile parses it: a bomb stops at the limit. Returns the
    tar's size (its members' bytes and headers)."""
    compressed = os.path.getsize(archive)
    # Tar headers and padding are runs of zeros: a small archive may exceed the ratio without harm.
    limit = min(max_bytes + 1024 * 1024, max(MAX_COMPRESSION_RATIO * compressed, 16 * 1024 * 1024))
    total = 0
    try:
        with gzip.open(archive, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                total += len(chunk)
                if total > limit:
                    break
    except (OSError, EOFError, zlib.error) as exc:
        raise InvalidModelError(f"model {name}/{version}: model.tar.gz is not gzip-compressed: {exc}",
                                model=name, version=version) from exc
    if total > limit:
        by_ratio = limit < max_bytes
        raise ModelTooLargeError(
            f"model {name}/{version}: model.tar.gz unpacks to more than "
            + (f"{MAX_COMPRESSION_RATIO} times its {compressed} bytes (a decompression bomb?)" if by_ratio
               else f"{max_bytes} bytes, the model size limit"),
            model=name, version=version, limit=limit,
        )
    return total


def _checked_members(tar: tarfile.TarFile, max_bytes: int, name: str, version: str) -> list:
    """Every member with its path parts, after checking them all (nothing is written before)."""

    def refuse(member: tarfile.TarInfo, reason: str):
        raise UnsafeModelError(f"model {name}/{version}: model.tar.gz member {member.name!r} {reason}; the archive "
                               "is refused and nothing was unpacked", model=name, version=version, member=member.name)

    members, seen, total = [], set(), 0
    for member in tar:
        if len(members) >= MAX_MEMBERS:
            raise ModelTooLargeError(f"model {name}/{version}: model.tar.gz has more than {MAX_MEMBERS} members",
                                     model=name, version=version, limit=MAX_MEMBERS)
        if member.issym() or member.islnk():
            refuse(member, f"is a {'symbolic' if member.issym() else 'hard'} link (to {member.linkname!r})")
        if not (member.isreg() or member.isdir()):
            refuse(member, "is a device, FIFO or other special file")
        if member.isreg() and member.mode & (stat.S_ISUID | stat.S_ISGID):
            refuse(member, "has a setuid or setgid bit")
        path = member.name
        if "\x00" in path or len(path) > MAX_PATH_CHARS:
            refuse(member, "has an invalid name")
        if path.startswith("/") or PurePosixPath(path).is_absolute():
            refuse(member, "has an absolute path")
        parts = [part for part in PurePosixPath(path).parts if part not in ("", ".")]
        if ".." in parts:
            refuse(member, "has a '..' in its path")
        if len(parts) > MAX_PATH_DEPTH:
            refuse(member, f"is more than {MAX_PATH_DEPTH} folders deep")
        if not parts:
            if member.isdir():  # "./": the archive's root
                continue
            refuse(member, "has an empty name")
        if parts[-1] == UNPACKED_MARKER:
            refuse(member, "uses a name the model cache reserves")
        key = tuple(parts)
        if key in seen and member.isreg():
            refuse(member, "appears twice")
        seen.add(key)
        total += member.size
        if total > max_bytes:
            raise ModelTooLargeError(f"model {name}/{version}: model.tar.gz unpacks to more than {max_bytes} bytes, "
                                     "the model size limit", model=name, version=version, limit=max_bytes)
        members.append((member, parts))
    return members


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: str, name: str, version: str) -> None:
    try:
        if member.isdir():
            os.makedirs(target, mode=0o700, exist_ok=True)
            return
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a folder over a file of the same name, or the reverse
        raise UnsafeModelError(f"model {name}/{version}: model.tar.gz member {member.name!r} clashes with another "
                               "member", model=name, version=version, member=member.name) from None
    source = tar.extractfile(member)
    if source is None:  # never for a regular file
        raise InvalidModelError(f"model {name}/{version}: model.tar.gz member {member.name!r} cannot be read",
                                model=name, version=version)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        handle = os.open(target, flags, 0o600)
    except FileExistsError:  # a file over a folder of the same name, or the reverse
        raise UnsafeModelError(f"model {name}/{version}: model.tar.gz member {member.name!r} appears twice",
                               model=name, version=version, member=member.name) from None
    with os.fdopen(handle, "wb") as out, contextlib.closing(source):
        shutil.copyfileobj(source, out, length=_CHUNK)
