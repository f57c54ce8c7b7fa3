"""Write (or check) the API's OpenAPI document, openapi.json, generated from the Powertools resolver.

``python -m devtools.openapi`` rewrites it; ``--check`` exits 1 when the committed file is stale
(the unit tests run the same comparison).
"""

import argparse
import os
import sys
from pathlib import Path

DOCUMENT = Path(__file__).resolve().parent.parent / "openapi.json"


def generate() -> str:
    # The resolver reads no settings to describe itself; placeholders satisfy Settings if asked.
    for name in ("INPUT_BUCKET", "RESULTS_BUCKET", "MODEL_BUCKET"):
        os.environ.setdefault(name, "unused")
    from explain_core.api import openapi_json

    return openapi_json() + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if openapi.json differs from the code")
    args = parser.parse_args(argv)
    document = generate()
    if args.check:
        if not DOCUMENT.exists() or DOCUMENT.read_text() != document:
            print("openapi.json is stale: run `make openapi`", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.write_text(document)
    print(f"wrote {DOCUMENT.name} ({len(document)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
