"""model.tar.gz unpacking: every archive trick is refused with a typed error, and nothing is written outside
the folder it unpacks into (nor is the folder itself left behind)."""

import gzip
import io
import os
import tarfile

import pytest

from explain_core import model_archive
from explain_core.errors import InvalidModelError, ModelTooLargeError, UnsafeModelError
from explain_core.model_archive import UNPACKED_MARKER, unpack_archive

LIMIT = 64 * 1024 * 1024


def make_archive(path, members) -> str:
    """``members``: (TarInfo fields as a dict, bytes or None) written as a gzip-compressed tar."""
    with tarfile.open(path, "w:gz") as tar:
        for fields, data in members:
            info = tarfile.TarInfo(fields.pop("name"))
            for key, value in fields.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return str(path)


def regular(name: str, data: bytes = b"weights") -> tuple:
    return {"name": name}, data


def unpack(tmp_path, members, max_bytes: int = LIMIT):
    archive = make_archive(tmp_path / "cache" / "model.tar.gz", members) if not isinstance(members, str) else members
    return unpack_archive(archive, str(tmp_path / "cache" / "unpacked"), max_bytes=max_bytes, name="m",
                          version="v1")


def files_under(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files}


@pytest.fixture(autouse=True)
def cache(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "outside").mkdir()
    yield
    # Whatever a test did, only the archive (and a finished unpack) may be in the cache, nothing beside it.
    assert files_under(tmp_path / "outside") == set()
    leftovers = {name for name in os.listdir(tmp_path / "cache") if name not in ("model.tar.gz", "unpacked")}
    assert leftovers == set()


def test_a_savedmodel_layout_is_unpacked_with_its_folders(tmp_path):
    root = unpack(tmp_path, [({"name": "1", "type": tarfile.DIRTYPE}, None), regular("1/saved_model.pb", b"pb"),
                             regular("1/variables/variables.index", b"ix"), regular("./1/assets/x.txt", b"")])
    assert files_under(root) == {"1/saved_model.pb", "1/variables/variables.index", "1/assets/x.txt",
                                 UNPACKED_MARKER}
    assert (tmp_path / "cache" / "unpacked" / "1" / "saved_model.pb").read_bytes() == b"pb"
    assert oct(os.stat(tmp_path / "cache" / "unpacked" / "1" / "saved_model.pb").st_mode & 0o7777) == "0o600"


def test_it_is_unpacked_once(tmp_path):
    unpack(tmp_path, [regular("model.keras")])
    marker = tmp_path / "cache" / "unpacked" / UNPACKED_MARKER
    first = marker.stat().st_mtime_ns
    (tmp_path / "cache" / "model.tar.gz").write_bytes(b"not read again")  # a finished folder is reused as it is
    unpack(tmp_path, str(tmp_path / "cache" / "model.tar.gz"))
    assert marker.stat().st_mtime_ns == first


def test_an_unfinished_unpack_is_redone(tmp_path):
    stale = tmp_path / "cache" / "unpacked"
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"x")  # no marker: a process died while unpacking
    root = unpack(tmp_path, [regular("model.keras")])
    assert files_under(root) == {"model.keras", UNPACKED_MARKER}


@pytest.mark.parametrize("members, reason", [
    ([regular("/etc/cron.d/evil")], "absolute path"),
    ([regular("../outside/evil")], "'..'"),
    ([regular("1/../../outside/evil")], "'..'"),
    ([({"name": "1/link", "type": tarfile.SYMTYPE, "linkname": "../outside"}, None)], "symbolic link"),
    ([regular("a"), ({"name": "1/hard", "type": tarfile.LNKTYPE, "linkname": "a"}, None)], "hard link"),
    ([({"name": "dev", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, None)], "device"),
    ([({"name": "fifo", "type": tarfile.FIFOTYPE}, None)], "device, FIFO"),
    ([({"name": "run", "mode": 0o4755}, b"#!")], "setuid"),
    ([regular("1/w"), regular("1/w")], "twice"),
    ([regular("1/" + UNPACKED_MARKER)], "reserves"),
    ([regular("/".join(["d"] * 40))], "folders deep"),
])
def test_unsafe_members_are_refused_before_anything_is_written(tmp_path, members, reason):
    # A harmless first member: it must not be written either (every member is checked before any write).
    with pytest.raises(UnsafeModelError, match=reason) as raised:
        unpack(tmp_path, [regular("1/saved_model.pb"), *members])
    assert raised.value.code == "unsafe_model"
    assert not (tmp_path / "cache" / "unpacked").exists()


def test_a_symlink_to_outside_then_a_file_through_it_writes_nothing(tmp_path):
    members = [({"name": "x", "type": tarfile.SYMTYPE, "linkname": str(tmp_path / "outside")}, None),
               regular("x/evil")]
    with pytest.raises(UnsafeModelError, match="symbolic link"):
        unpack(tmp_path, members)


def test_a_decompression_bomb_stops_at_the_ratio(tmp_path):
    path = tmp_path / "cache" / "model.tar.gz"
    make_archive(path, [regular("zeros.bin", bytes(40 * 1024 * 1024))])  # 40 MB of zeros: about 40 kB compressed
    assert os.path.getsize(path) * model_archive.MAX_COMPRESSION_RATIO < 40 * 1024 * 1024
    with pytest.raises(ModelTooLargeError, match="decompression bomb"):
        unpack(tmp_path, str(path))


def test_the_unpacked_size_limit(tmp_path):
    data = os.urandom(300_000)  # incompressible: the ratio passes, the size does not
    with pytest.raises(ModelTooLargeError, match="model size limit"):
        unpack(tmp_path, [regular("a.bin", data), regular("b.bin", data)], max_bytes=500_000)


def test_too_many_members(tmp_path, monkeypatch):
    monkeypatch.setattr(model_archive, "MAX_MEMBERS", 5)
    with pytest.raises(ModelTooLargeError, match="more than 5 members"):
        unpack(tmp_path, [regular(f"f{i}") for i in range(6)])


@pytest.mark.parametrize("content", [b"PK\x03\x04 a zip, not a tar.gz", gzip.compress(b"gzip, but no tar inside" * 40)])
def test_not_a_tar_gz(tmp_path, content):
    path = tmp_path / "cache" / "model.tar.gz"
    path.write_bytes(content)
    with pytest.raises(InvalidModelError, match="gzip"):
        unpack(tmp_path, str(path))
    assert not (tmp_path / "cache" / "unpacked").exists()
