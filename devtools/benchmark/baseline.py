"""The same measurement on an earlier commit's code, in the same benchmark run (before/after ratios).

``run_at_commit(commit, "module:function", kwargs)`` exports the commit's ``layers`` and
``functions`` (``git archive``) to a temporary folder and runs ``function(harness, **kwargs)`` in a
fresh Python process whose ``explain_core`` and function modules are the commit's, while
``devtools`` (the harness, the subjects, the measurement itself) is the working tree's: both sides
are measured by the same code, on the same emulator kind, models and images. The child starts its
own emulator (``Harness``) and returns the function's JSON-serialisable result.

The measured function must use only what both versions of ``explain_core`` have (e.g.
``build_explainer``, ``run_method``, the handler): ``devtools`` is new, the library is old.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from devtools.benchmark.subjects import REPO

#: The commit before issue 15 (performance and cost): the baseline of its before/after figures.
ISSUE_15_BASELINE = "b859562"
#: Folders of the repository that make up the functions' code (the rest comes from the working tree).
CODE_FOLDERS = ("layers", "functions")


def export_commit(commit: str, directory: Path) -> Path:
    """``layers`` and ``functions`` of ``commit`` extracted under ``directory``; returns it."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, *CODE_FOLDERS], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    return directory


def run_at_commit(commit: str, target: str, kwargs: dict, timeout: float = 1800.0) -> dict:
    """``target`` (``"package.module:function"``) called as ``function(harness, **kwargs)`` in a child
    process running ``commit``'s explain_core and functions; returns what it returned (JSON)."""
    with tempfile.TemporaryDirectory(prefix=f"baseline-{commit}-") as tmp:
        root = export_commit(commit, Path(tmp))
        result_path = root / "result.json"
        # The commit's code first: explain_core and the function modules resolve there; devtools from here.
        path = [str(root), str(root / "layers" / "explain_core" / "src"), str(REPO)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        completed = subprocess.run(
            [sys.executable, "-m", "devtools.benchmark.baseline", target, json.dumps(kwargs), str(result_path)],
            cwd=root, env=env, timeout=timeout, capture_output=True, text=True,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"the {commit} measurement failed (exit {completed.returncode}): "
                               f"{completed.stderr.strip()[-2000:]}")
        return json.loads(result_path.read_text())


def main(argv: list[str]) -> None:
    """The child: start an emulator, call the target with it, write its result as JSON."""
    import importlib

    from devtools.benchmark.harness import Harness

    target, kwargs, output = argv
    module_name, function_name = target.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    import explain_core

    # The point of the child: make sure the library really is the exported commit's.
    if not Path(explain_core.__file__).resolve().is_relative_to(Path(output).resolve().parent):
        raise SystemExit(f"explain_core imported from {explain_core.__file__}, not from the exported commit")
    harness = Harness("WARNING", Path(output).with_name("handler-output.log"))
    try:
        result = function(harness, **json.loads(kwargs))
    finally:
        harness.close()
    Path(output).write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
