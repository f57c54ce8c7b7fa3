"""layers/slim-site-packages.sh on a small site-packages: what it removes, what it keeps, what it records,
and that an extension module whose symbol tables it dropped still loads and runs."""

import importlib.util
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import markupsafe

SCRIPT = Path(__file__).resolve().parents[2] / "layers" / "slim-site-packages.sh"


def section_names(path: Path) -> set[str]:
    """Names of an ELF64 file's sections (from its section header table)."""
    data = path.read_bytes()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shnum, shstrndx = struct.unpack_from("<HH", data, 0x3C)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + 64 * i) for i in range(shnum)]
    strings = data[headers[shstrndx][4]:headers[shstrndx][4] + headers[shstrndx][5]]
    return {strings[h[0]:strings.index(b"\0", h[0])].decode() for h in headers}


def test_slimming_removes_the_listed_items_and_keeps_a_working_extension(tmp_path):
    site = tmp_path / "site-packages"
    extension = next(Path(markupsafe.__file__).parent.glob("_speedups*.so"))
    (site / "markupsafe").mkdir(parents=True)
    copied = site / "markupsafe" / extension.name
    shutil.copy(extension, copied)
    assert {".symtab", ".strtab"} <= section_names(copied)  # the wheel ships it unstripped
    (site / "pkg" / "tests").mkdir(parents=True)
    (site / "pkg" / "tests" / "test_pkg.py").write_text("x" * 1000)
    (site / "pkg" / "core.py").write_text("VALUE = 1\n")
    (site / "tensorboard").mkdir()
    (site / "tensorboard" / "__init__.py").write_text("y" * 500)
    for service in ("s3", "ec2"):
        (site / "botocore" / "data" / service / "2006-03-01").mkdir(parents=True)
        (site / "botocore" / "data" / service / "2006-03-01" / "service-2.json").write_text("{}")
    (site / "botocore" / "data" / "endpoints.json").write_text("{}")
    record = tmp_path / "slimmed.tsv"
    before = copied.stat().st_size

    subprocess.run(["sh", str(SCRIPT), sys.executable, str(site)], check=True, capture_output=True,
                   env={**os.environ, "SLIMMED_RECORD": str(record)})

    names = section_names(copied)
    assert not names & {".symtab", ".strtab"} and not any(n.startswith(".debug") for n in names)
    assert {".dynsym", ".dynstr", ".text"} <= names
    spec = importlib.util.spec_from_file_location("_speedups", copied)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module._escape_inner("<a & 'b'>") == "&lt;a &amp; &#39;b&#39;&gt;"
    assert not (site / "pkg" / "tests").exists() and (site / "pkg" / "core.py").read_text() == "VALUE = 1\n"
    assert not (site / "tensorboard").exists()
    assert (site / "botocore" / "data" / "s3").is_dir() and not (site / "botocore" / "data" / "ec2").exists()
    assert (site / "botocore" / "data" / "endpoints.json").exists()

    rows = [line.split("\t") for line in record.read_text().splitlines()]
    assert {run for run, _, _ in rows} == {"1"}
    removed = {item: int(size) for _, item, size in rows}
    assert removed["shared-library-symbols"] == before - copied.stat().st_size > 0
    assert removed["test-suites"] >= 1000 and removed["tensorboard"] >= 500
    assert removed["botocore-unused-service-models"] >= 2 and removed["tensorflow-headers"] == 0

    # A second run (the shap image's own layer) is numbered 2 and finds nothing more to strip.
    subprocess.run(["sh", str(SCRIPT), sys.executable, str(site)], check=True, capture_output=True,
                   env={**os.environ, "SLIMMED_RECORD": str(record)})
    second = {item: int(size) for run, item, size in (line.split("\t") for line in record.read_text().splitlines())
              if run == "2"}
    assert second["shared-library-symbols"] == 0 and second["test-suites"] == 0
