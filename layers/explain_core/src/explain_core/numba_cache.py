"""shap's numba functions cached on disk, so the first Partition call of a process does not compile them.

shap decorates its inner loops with ``@njit`` without ``cache=True`` (the Image masker's partition
tree, the Partition explainer's mask matrix and output averaging, the Exact explainer's Gray code,
the Tabular masker's delta masking, ...): every fresh process compiles them again on first use,
4-7 s in the first Partition explanation (docs/benchmark.md, partition-profile). Numba can cache
a compiled function on disk once ``enable_caching()`` is called on its dispatcher before its first
call; :func:`import_shap` does that for every shap dispatcher numba can cache (see
:func:`not_cacheable` for the three it cannot: they still compile in each process, about two thirds
of the first call; :func:`precompile` compiles them at init where that is wanted).

The cache is used only where ``NUMBA_CACHE_DIR`` is set (numba's own variable): the shap image sets
it to ``/opt/numba-cache`` and fills it at build time with a warm-up run (``python -m
explain_core.numba_cache``); elsewhere :mod:`explain_core.runtime` defaults it to ``/tmp/numba``,
so local processes share one cache. Two constraints of Lambda shape the rest:

* The image is built on one machine and runs on another: entries are keyed by the CPU numba
  compiles for, so the image also sets ``NUMBA_CPU_NAME=generic`` (portable code, the same key on
  every x86-64 host; the functions cached are small loops, where the host's vector extensions
  are not what limits them).
* Only ``/tmp`` is writable at run time, and numba reads and writes its cache in one directory it
  must be able to write (``_CacheLocator.ensure_cache_path``; none of its locators reads a
  read-only directory). A read-only cache directory is therefore copied once under ``/tmp`` (about
  240 kB) and numba is pointed at the copy.

Without a usable directory nothing changes: shap compiles as before.
"""

import logging
import os
import shutil
import stat
import sys
import tempfile
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

#: Where a read-only cache directory (the image's) is copied, under the writable temporary directory.
WRITABLE_COPY_NAME = "numba-cache"

_lock = threading.Lock()
_prepared: dict[str, object] = {}


def import_shap():
    """``import shap``, with its numba functions cached on disk when ``NUMBA_CACHE_DIR`` is set (once per process)."""
    import shap

    with _lock:
        if "shap" not in _prepared:
            _prepared["shap"] = enable_caching("shap")
    return shap


def writable_cache_dir(directory: Path) -> Path | None:
    """``directory`` if numba can write there; else a copy of it under the temporary directory (None if neither).

    The copy is made in a private staging directory next to ``$TMPDIR/numba-cache`` and renamed into place
    in one step, so a process never finds a half-finished copy there. An existing ``numba-cache`` is reused
    only if it is this user's and nobody else can write it (numba loads code from it); otherwise this process
    copies into a fresh private directory of its own.
    """
    if _writable(directory):
        return directory
    root = Path(tempfile.gettempdir())
    target = root / WRITABLE_COPY_NAME
    try:
        if not _private(target):
            if os.path.lexists(target):
                logger.warning("numba cache: %s is not this user's private directory; using a fresh one", target)
                return _copied_into(directory, Path(tempfile.mkdtemp(prefix=f"{WRITABLE_COPY_NAME}-")))
            staging = _copied_into(directory, Path(tempfile.mkdtemp(prefix=f".{WRITABLE_COPY_NAME}-", dir=root)))
            try:
                os.rename(staging, target)  # atomic; fails if another process put its copy there first
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
                if not _private(target):
                    return _copied_into(directory, Path(tempfile.mkdtemp(prefix=f"{WRITABLE_COPY_NAME}-")))
    except OSError as exc:
        logger.warning("numba cache: cannot copy %s under %s (%s); shap compiles on first use", directory, root, exc)
        return None
    return target if _writable(target) else None


def _copied_into(directory: Path, destination: Path) -> Path:
    """``destination`` (an existing directory) with ``directory``'s files copied in, if it exists; private."""
    if directory.is_dir():
        shutil.copytree(directory, destination, dirs_exist_ok=True)
    destination.chmod(0o700)  # copytree gave it the image's mode; mkdtemp's is this user's only
    return destination


def _private(path: Path) -> bool:
    """``path`` is a real directory (not a link) owned by this user that neither group nor others can write."""
    try:
        status = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(status.st_mode) and status.st_uid == os.geteuid()
            and not status.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError:
        return False
    return True


def package_dispatchers(package: str) -> list:
    """Numba dispatchers defined in ``package``'s imported modules (each once, however many modules re-export it)."""
    from numba.core.dispatcher import Dispatcher

    found = {}
    for name, module in list(sys.modules.items()):
        if module is None or not (name == package or name.startswith(package + ".")):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher) and str(value.py_func.__module__).split(".")[0] == package:
                found[id(value)] = value
    return list(found.values())


def enable_caching(package: str) -> dict:
    """Turn on numba's disk cache for ``package``'s dispatchers; returns what was done (for logs and tests)."""
    from numba.core import config

    if not config.CACHE_DIR:
        return {"enabled": False, "reason": "NUMBA_CACHE_DIR is not set"}
    directory = writable_cache_dir(Path(config.CACHE_DIR))
    if directory is None:
        return {"enabled": False, "reason": f"{config.CACHE_DIR} is not writable and cannot be copied"}
    # numba's locator reads config.CACHE_DIR when a dispatcher's cache is created, i.e. below.
    config.CACHE_DIR = str(directory)
    cached, skipped = [], {}
    for dispatcher in package_dispatchers(package):
        reason = not_cacheable(dispatcher)
        if reason:
            skipped[dispatcher.py_func.__qualname__] = reason
        else:
            dispatcher.enable_caching()
            cached.append(dispatcher.py_func.__qualname__)
    return {"enabled": True, "directory": str(directory), "cached": sorted(cached), "skipped": skipped,
            "cpu_name": config.CPU_NAME}


#: Arguments through which shap passes a function (its ``link``, itself a numba dispatcher).
FUNCTION_ARGUMENTS = frozenset({"link"})
#: Recursive functions whose recursive call changes an argument's type (``lower_credit(i, 0, ...)``
#: recurses with a float ``value``): numba 0.68 loads their two linked signatures from the cache
#: into a broken state; measured here, a cached ``lower_credit`` crashes the next Partition call
#: (segmentation fault). Same-type recursion (``_rec_fill_masks``) loads and runs correctly.
RETYPING_RECURSION = frozenset({"lower_credit"})


def not_cacheable(dispatcher) -> str | None:
    """Why a dispatcher must keep compiling in each process (None: it can be cached).

    * :data:`RETYPING_RECURSION`: crashes when loaded from the cache.
    * Functions taking a function argument (``_build_fixed_*_output(..., link, ...)``): numba keys
      the entry by that dispatcher's type, which differs in every process, so the entry never hits
      and every process would add one more file.
    """
    code = dispatcher.py_func.__code__
    if dispatcher.py_func.__name__ in RETYPING_RECURSION:
        return "recursion with a changing argument type (crashes when loaded from the cache)"
    if FUNCTION_ARGUMENTS & set(code.co_varnames[: code.co_argcount]):
        return "takes a function argument (never hits: keyed by a per-process type)"
    return None


def cache_hits(package: str = "shap") -> dict[str, int]:
    """Signatures loaded from the disk cache per dispatcher of ``package`` in this process (numba's ``stats``)."""
    return {dispatcher.py_func.__qualname__: sum(dispatcher.stats.cache_hits.values())
            for dispatcher in package_dispatchers(package)}


def cache_misses(package: str = "shap") -> dict[str, int]:
    """Signatures compiled in this process per dispatcher of ``package`` (numba's ``stats``: a dispatcher
    without a cache counts each compilation as a miss too)."""
    return {dispatcher.py_func.__qualname__: sum(dispatcher.stats.cache_misses.values())
            for dispatcher in package_dispatchers(package)}


def state() -> dict:
    """What :func:`import_shap` did in this process (enabled, directory, cached and skipped functions)."""
    return dict(_prepared.get("shap") or {"enabled": False, "reason": "shap not imported through import_shap yet"})


def precompile() -> dict:
    """Compile (or load from the cache) what a Partition explanation of an image needs, on a tiny image
    and a NumPy model: what the first real request would otherwise compile. Needs no TensorFlow."""
    import numpy as np

    shap = import_shap()
    images = np.random.default_rng(0).random((1, 16, 16, 3)).astype(np.float32)

    def score(batch, dtype):
        return np.asarray(batch, dtype).reshape(len(batch), -1).mean(axis=1)

    masker = shap.maskers.Image("blur(4,4)", images.shape[1:])
    for dtype in (np.float32, np.float64):  # image models' outputs; the text family's
        shap.PartitionExplainer(lambda batch, dtype=dtype: score(batch, dtype), masker)(
            images, max_evals=60, batch_size=16, silent=True)
    return {"compiled": {name: count for name, count in cache_misses().items() if count}}


def warm_up() -> dict:
    """Fill the cache at image build time (functions/shap/Dockerfile): :func:`precompile`, then the
    registry's own ``PartitionExplainer`` (blur and inpainting maskers) on a tiny Keras image model,
    so the signatures cached are the ones the family's requests use. Returns what was compiled."""
    import keras
    import numpy as np

    from explain_core.attribution import build_explainer, run_method
    from explain_core.model_card import ModelCard
    from explain_core.registry import REGISTRY

    import_shap()
    done = state()
    if not done.get("enabled"):
        raise RuntimeError(f"numba cache not enabled: {done.get('reason')}")
    precompile()
    side = 16
    inputs = keras.Input((side, side, 3), name="warm_up_image")
    features = keras.layers.Conv2D(4, 3, name="warm_up_conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="warm_up_pool")(features)
    model = keras.Model(inputs, keras.layers.Dense(2, name="warm_up_logits")(pooled), name="warm_up")
    card = ModelCard(name="numba-warm-up", version="v1", input_height=side, input_width=side,
                     class_names=["a", "b"])
    images = np.random.default_rng(0).random((1, side, side, 3)).astype(np.float32)
    targets = np.eye(2, dtype=np.float32)[[0]]
    spec = REGISTRY["PartitionExplainer"]
    for masker in ("blur", "inpaint_telea"):
        params = spec.resolve({"max_evals": 60, "masker": masker, "blur_kernel": 4}, (side, side))
        run_method(build_explainer(spec, model, card, params, 16), images, targets)
    done["compiled"] = {name: count for name, count in cache_misses().items() if count}
    return done


if __name__ == "__main__":
    import json

    print(json.dumps(warm_up(), indent=1, sort_keys=True))
