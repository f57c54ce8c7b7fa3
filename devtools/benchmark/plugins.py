"""Benchmark sections as plug-ins: a module of this package that defines ``SECTION`` is one.

A plug-in section module defines:

``SECTION``
    its name on the command line (``--sections NAME``) and its key in the JSON results;
``add_arguments(parser)`` (optional)
    its own command-line flags (prefix them with the section's name);
``run(harness, args, results) -> dict``
    measures, and returns what goes under ``results[SECTION]`` (JSON-serialisable); ``results``
    holds what the sections before it measured in this run (built-in sections run first, then
    plug-ins in module-name order), so a section may build on them (e.g. cost on ``methods``);
``tables(section_results, args) -> list[str]``
    its plain-text tables (``report.format_table``), printed after the built-in sections'.

Adding a section is adding its module: nothing else to touch.
"""

import importlib
import pkgutil
from functools import cache
from types import ModuleType

import devtools.benchmark


@cache
def section_modules() -> dict[str, ModuleType]:
    """Plug-in sections by name, in module-name order."""
    found = {}
    for info in sorted(pkgutil.iter_modules(devtools.benchmark.__path__), key=lambda i: i.name):
        if info.name in {"__main__", "cli", "plugins"}:
            continue
        module = importlib.import_module(f"devtools.benchmark.{info.name}")
        if isinstance(getattr(module, "SECTION", None), str):
            found[module.SECTION] = module
    return found
