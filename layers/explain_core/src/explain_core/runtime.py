"""Run-time environment: on Lambda only ``/tmp`` is writable.

Matplotlib, Keras and TensorFlow write config and caches to the home directory by default,
which is read-only in a Lambda container; point them at /tmp before they are imported.
"""

import os

_WRITABLE_ROOT = os.environ.get("EXPLAIN_TMP_DIR", "/tmp")


def prepare_writable_dirs() -> None:
    defaults = {
        "MPLCONFIGDIR": os.path.join(_WRITABLE_ROOT, "matplotlib"),
        "KERAS_HOME": os.path.join(_WRITABLE_ROOT, "keras"),
        "XDG_CACHE_HOME": os.path.join(_WRITABLE_ROOT, "cache"),
        "NUMBA_CACHE_DIR": os.path.join(_WRITABLE_ROOT, "numba"),
        # Quiet TensorFlow's C++ start-up banner; real errors still surface as exceptions.
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "MPLBACKEND": "Agg",
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    for name in ("MPLCONFIGDIR", "KERAS_HOME", "XDG_CACHE_HOME", "NUMBA_CACHE_DIR"):
        os.makedirs(os.environ[name], exist_ok=True)
