"""explain_core.numba_cache: which shap functions are cached, where the cache lives on a read-only image,
and that a fresh process loads what the image's warm-up compiled (same values as compiling)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.benchmark.cold_start import attribute_imports, group_of, python_path
from explain_core import numba_cache

REPO = Path(__file__).resolve().parents[2]


def _dispatchers_by_name() -> dict:
    import shap  # noqa: F401  (imports the modules holding the dispatchers)

    return {d.py_func.__name__: d for d in numba_cache.package_dispatchers("shap")}


def test_shap_dispatchers_found_and_sorted_into_cacheable_or_not():
    dispatchers = _dispatchers_by_name()
    # The ones the Partition explainer compiles on its first call.
    assert {"_jit_build_partition_tree", "_init_masks", "_rec_fill_masks", "lower_credit",
            "_build_fixed_single_output", "_build_fixed_multi_output", "identity"} <= set(dispatchers)
    assert numba_cache.not_cacheable(dispatchers["lower_credit"]).startswith("recursion with a changing")
    assert numba_cache.not_cacheable(dispatchers["_build_fixed_single_output"]).startswith("takes a function")
    assert numba_cache.not_cacheable(dispatchers["_build_fixed_multi_output"]).startswith("takes a function")
    for name in ("_jit_build_partition_tree", "_init_masks", "_rec_fill_masks", "identity"):
        assert numba_cache.not_cacheable(dispatchers[name]) is None, name


def test_read_only_cache_dir_is_copied_under_tmp(tmp_path, monkeypatch):
    image_cache, writable_root = _read_only_image_cache(tmp_path, monkeypatch)

    chosen = numba_cache.writable_cache_dir(image_cache)

    assert chosen == writable_root / numba_cache.WRITABLE_COPY_NAME
    assert (chosen / "maskers_x" / "f.nbi").read_bytes() == b"index"
    # A second process start reuses the copy (it does not copy over files numba wrote since).
    (chosen / "maskers_x" / "new.nbc").write_bytes(b"data")
    assert numba_cache.writable_cache_dir(image_cache) == chosen
    assert (chosen / "maskers_x" / "new.nbc").exists()


def _read_only_image_cache(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(the image's cache, with one file; the writable temporary root) with the image's cache read-only."""
    image_cache = tmp_path / "opt" / "numba-cache"
    (image_cache / "maskers_x").mkdir(parents=True)
    (image_cache / "maskers_x" / "f.nbi").write_bytes(b"index")
    writable_root = tmp_path / "tmp"
    writable_root.mkdir()
    monkeypatch.setattr(numba_cache.tempfile, "tempdir", str(writable_root))
    # Root ignores permission bits: say the image's directory is read-only as Lambda's /opt is.
    real_writable = numba_cache._writable
    monkeypatch.setattr(numba_cache, "_writable", lambda d: d != image_cache and real_writable(d))
    return image_cache, writable_root


def test_the_copy_is_renamed_into_place_private_and_complete(tmp_path, monkeypatch):
    image_cache, writable_root = _read_only_image_cache(tmp_path, monkeypatch)
    renamed = []
    real_rename = numba_cache.os.rename

    def rename(source, destination):
        # The copy is complete before it gets the name other processes look for.
        assert (Path(source) / "maskers_x" / "f.nbi").read_bytes() == b"index"
        assert not Path(destination).exists()
        renamed.append((Path(source).parent, Path(destination)))
        real_rename(source, destination)

    monkeypatch.setattr(numba_cache.os, "rename", rename)
    chosen = numba_cache.writable_cache_dir(image_cache)

    assert chosen == writable_root / numba_cache.WRITABLE_COPY_NAME
    assert renamed == [(writable_root, chosen)]
    assert chosen.stat().st_mode & 0o077 == 0
    assert sorted(p.name for p in writable_root.iterdir()) == [numba_cache.WRITABLE_COPY_NAME]  # no staging left


def test_a_half_finished_copy_never_has_the_shared_name(tmp_path, monkeypatch):
    image_cache, writable_root = _read_only_image_cache(tmp_path, monkeypatch)

    def failing_copy(source, destination, **_):
        (Path(destination) / "partial.nbi").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(numba_cache.shutil, "copytree", failing_copy)
    assert numba_cache.writable_cache_dir(image_cache) is None
    assert not (writable_root / numba_cache.WRITABLE_COPY_NAME).exists()


@pytest.mark.parametrize("unsafe", ["group_writable", "another_owner", "symlink"])
def test_an_unsafe_existing_copy_is_not_reused(tmp_path, monkeypatch, unsafe):
    image_cache, writable_root = _read_only_image_cache(tmp_path, monkeypatch)
    shared = writable_root / numba_cache.WRITABLE_COPY_NAME
    planted = tmp_path / "planted"
    (planted / "maskers_x").mkdir(parents=True)
    (planted / "maskers_x" / "f.nbi").write_bytes(b"planted")
    if unsafe == "symlink":
        shared.symlink_to(planted, target_is_directory=True)
    else:
        planted.rename(shared)
        if unsafe == "group_writable":
            shared.chmod(0o775)
        else:
            other_user = os.geteuid() + 1
            monkeypatch.setattr(numba_cache.os, "geteuid", lambda: other_user)

    chosen = numba_cache.writable_cache_dir(image_cache)

    assert chosen is not None and chosen != shared and chosen.parent == writable_root
    assert (chosen / "maskers_x" / "f.nbi").read_bytes() == b"index"  # the image's files, not the planted ones
    assert chosen.stat().st_mode & 0o077 == 0
    assert (shared / "maskers_x" / "f.nbi").read_bytes() == b"planted"  # left alone


def test_writable_cache_dir_is_used_in_place(tmp_path):
    assert numba_cache.writable_cache_dir(tmp_path / "cache") == tmp_path / "cache"


def _python(code: str, cache_dir: Path) -> dict:
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "NUMBA_CPU_NAME": "generic",
                   "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": python_path()}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


FRESH_PROCESS = """
import json
import numpy as np
from explain_core import numba_cache
shap = numba_cache.import_shap()
images = np.random.default_rng(3).random((1, 24, 24, 3)).astype(np.float32)
weights = np.random.default_rng(4).random((24, 24, 3)).astype(np.float32)
f = lambda x: (np.asarray(x, np.float32) * weights).reshape(len(x), -1).sum(axis=1)
values = shap.PartitionExplainer(f, shap.maskers.Image("blur(4,4)", images.shape[1:]))(
    images, max_evals=80, batch_size=16, silent=True).values
print(json.dumps({"hits": numba_cache.cache_hits(), "misses": numba_cache.cache_misses(),
                  "state": numba_cache.state(), "values": np.asarray(values, np.float64).ravel().tolist()}))
"""


@pytest.mark.slow
def test_fresh_process_loads_the_warm_up_cache(tmp_path):
    """The image build's warm-up fills the cache; a fresh process then compiles none of the cached
    functions (numba's stats), and its values equal those of a process that compiled everything."""
    image_cache = tmp_path / "image-cache"
    build = subprocess.run([sys.executable, "-c", "from explain_core import numba_cache; "
                            "import json; print(json.dumps(numba_cache.precompile()))"], cwd=REPO,
                           env={**os.environ, "NUMBA_CACHE_DIR": str(image_cache), "NUMBA_CPU_NAME": "generic",
                                "PYTHONPATH": python_path()},
                           capture_output=True, text=True, timeout=600, check=False)
    assert build.returncode == 0, build.stderr[-2000:]
    assert any(image_cache.rglob("_image._jit_build_partition_tree-*.nbi"))

    cached = _python(FRESH_PROCESS, image_cache)
    compiled = _python(FRESH_PROCESS, tmp_path / "empty")

    assert cached["state"]["enabled"] and cached["state"]["cpu_name"] == "generic"
    for name in ("_jit_build_partition_tree", "_init_masks", "_rec_fill_masks", "identity"):
        assert cached["hits"][name] >= 1 and cached["misses"][name] == 0, name
        assert compiled["hits"][name] == 0 and compiled["misses"][name] >= 1, name
    # float32 model outputs: the two processes agree to float32 rounding (measured: 5e-6 relative at most)
    assert cached["values"] == pytest.approx(compiled["values"], rel=1e-4, abs=1e-7)
    assert max(abs(v) for v in cached["values"]) > 0  # a real explanation, not zeros


def test_import_time_is_attributed_to_library_groups_per_phase():
    stderr = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "cold-start-phase:init",
        "import time:       300 |        500 |   botocore.session",
        "import time:      1000 |       1000 | aws_lambda_powertools",
        "cold-start-phase:first",
        "import time:   2000000 |    2500000 | tensorflow",
        "import time:    500000 |     500000 |   tensorflow.python",
        "import time:     40000 |      40000 | keras",
        "TensorFlow log line on stderr",
        "import time:      7000 |       7000 | explain_core.attribution",
        "cold-start-phase:end",
        "import time:   9000000 |    9000000 | shap",
    ])
    phases = attribute_imports(stderr)
    assert phases["init"]["boto3"] == pytest.approx(0.0003)
    assert phases["init"]["Powertools+X-Ray"] == pytest.approx(0.001)
    assert phases["first"]["TensorFlow"] == pytest.approx(2.5)
    assert phases["first"]["Keras"] == pytest.approx(0.04)
    assert phases["first"]["explain_core"] == pytest.approx(0.007)
    assert phases["first"]["shap+numba"] == 0  # after the end mark: not counted
    assert group_of("numba.core") == "shap+numba" and group_of("somethingelse") == "other"
