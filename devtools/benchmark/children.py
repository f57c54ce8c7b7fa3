"""Benchmark work in fresh subprocesses, and their peak RSS (the ``insights``, ``memory`` and ``cold-start`` sections).

A child is ``python -m <module> ... --output FILE``: it writes its JSON result to FILE and reports its own
peak RSS in it (:func:`peak_rss_mb`, VmHWM), since ``ru_maxrss`` from ``os.wait4`` includes the parent's RSS
at the fork (Linux carries the old address space's high-water mark over exec).
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.benchmark.subjects import REPO
from explain_core.memory import process_memory_mb


def peak_rss_mb() -> float:
    """This process's peak RSS so far (MB): VmHWM, the high-water mark of its own address space."""
    return process_memory_mb("VmHWM")


def run_child(module: str, arguments: list[str], log, timeout: float, *, env: dict | None = None,
              interpreter_args: tuple[str, ...] = ()) -> tuple[dict | None, float, float, str | None]:
    """(result, ru_maxrss MB, wall seconds, error) of ``python -m module arguments --output FILE``: see
    :func:`run_child_process` (the same, with the child's output text too)."""
    child = run_child_process(module, arguments, log, timeout, env=env, interpreter_args=interpreter_args)
    return child.result, child.maxrss_mb, child.wall_s, child.error


@dataclass
class ChildRun:
    result: dict | None  # the JSON the child wrote to its --output file (None: it wrote none)
    maxrss_mb: float  # ru_maxrss from os.wait4: includes the parent's RSS at the fork
    wall_s: float
    error: str | None  # why it failed (exit status or timeout, and its last output line); None: exit 0
    output: str  # what it wrote to stdout and stderr, interleaved as written


def run_child_process(module: str, arguments: list[str], log, timeout: float, *, env: dict | None = None,
                      interpreter_args: tuple[str, ...] = ()) -> ChildRun:
    """Run ``python [interpreter_args] -m module arguments --output FILE`` in the repository with ``env`` over
    this process's environment; its output goes to ``log`` (None: nowhere) and back in the result; killed
    after ``timeout`` seconds.

    ru_maxrss is the child's own, from ``os.wait4`` (RUSAGE_CHILDREN would be the largest of all the children
    waited for so far); it includes the parent's RSS at the fork, so tables read the child's VmHWM from its
    result (:func:`peak_rss_mb`)."""
    with tempfile.TemporaryDirectory() as directory:
        output, errors = Path(directory) / "result.json", Path(directory) / "stderr.txt"
        command = [sys.executable, *interpreter_args, "-m", module, *arguments, "--output", str(output)]
        environment = {**os.environ, **env} if env else None
        started = time.perf_counter()
        with errors.open("w") as stderr:
            process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=stderr, stderr=subprocess.STDOUT)
            timer = threading.Timer(timeout, process.kill)
            timer.start()
            try:
                _, status, usage = os.wait4(process.pid, 0)
            finally:
                timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        wall = time.perf_counter() - started
        text = errors.read_text(errors="replace")
        if log is not None:
            log.write(f"--- {module} {' '.join(arguments)} (exit {process.returncode}, {wall:.1f} s)\n{text}\n")
            log.flush()
        error = None
        if process.returncode != 0:
            reason = f"killed after {timeout:.0f} s" if wall >= timeout else f"exit {process.returncode}"
            error = f"{reason}: {text.strip().splitlines()[-1] if text.strip() else ''}"[:300]
        result = json.loads(output.read_text()) if output.exists() else None
        return ChildRun(result, usage.ru_maxrss / 1024, wall, error, text)
