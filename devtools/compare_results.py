"""Compare the manifests of two result folders, ignoring what changes from run to run.

For a change that must not change behaviour (a refactor): run ``make demo DEMO_ARGS=--once``
before and after (with the same ``.cache/`` models, whose archives carry timestamps), keep each
``local-results/``, then ``python -m devtools.compare_results BEFORE AFTER``. Ignored: timings
(``timings``, ``seconds``, ``seconds_per_image``), ids (``attempt``, ``request_id``, attempt and
job ids inside keys), ``created_at`` and ``loaded_from`` (memory, /tmp or S3: the cache's state).
Exits 1 and prints a unified diff per manifest when anything else differs.
"""

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

IGNORED_FIELDS = frozenset({"timings", "seconds", "seconds_per_image", "attempt", "request_id", "created_at",
                            "loaded_from"})
IDS = ((re.compile(r"attempts/[^/]+/"), "attempts/<attempt>/"), (re.compile(r"jobs/[0-9a-f]{32}/"), "jobs/<job>/"))


def without_ids(text: str) -> str:
    for pattern, replacement in IDS:
        text = pattern.sub(replacement, text)
    return text


def normalised(node):
    if isinstance(node, dict):
        return {key: normalised(value) for key, value in sorted(node.items()) if key not in IGNORED_FIELDS}
    if isinstance(node, list):
        return [normalised(value) for value in node]
    return without_ids(node) if isinstance(node, str) else node


def manifests(root: Path) -> dict[str, list[str]]:
    return {without_ids(str(path.relative_to(root))):
            json.dumps(normalised(json.loads(path.read_text())), indent=1).splitlines()
            for path in sorted(root.rglob("manifest.json"))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    before, after = manifests(args.before), manifests(args.after)
    print(f"{len(before)} manifests before, {len(after)} after")
    different = False
    for name in sorted(set(before) | set(after)):
        if name not in before or name not in after:
            print(f"only {'after' if name in after else 'before'}: {name}")
            different = True
            continue
        diff = list(difflib.unified_diff(before[name], after[name], name, name, lineterm="", n=1))
        if diff:
            print("\n".join(diff))
            different = True
    print("different" if different else "identical except timings and ids")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
