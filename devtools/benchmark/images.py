"""Section ``images``: each function image's uncompressed size, its layers' split, and what the build removed.

The images are built through :mod:`devtools.containers` (Docker engine, the plain Lambda base stand-in, the
wheelhouse served to the Dockerfiles' own ``pip install``, ``sam build``); Docker's layer cache makes an
up-to-date build a matter of seconds. ``--images-no-build`` measures the images as they are.

Sizes are Docker's uncompressed image sizes (``docker image inspect .Size``, bytes; what Lambda's 10 GB
image limit counts), split into the base image (the local stand-in for ``public.ecr.aws/lambda/python:3.11``:
Python and the runtime interface client only, like AWS's), the shared ML layer (the ``RUN`` that installs
``layers/requirements-*.txt`` and runs ``layers/slim-site-packages.sh``, identical in every ML image, stored
once) and the function's own layers (code, its own requirements, caches). Everything above the base is
what an AWS build of the same Dockerfiles installs. The bytes removed are what ``slim-site-packages.sh``
recorded, item by item, when it ran in the build (``/opt/explain/slimmed.tsv`` in the image).
"""

import json

from devtools.benchmark.report import Column, format_table

SECTION = "images"
#: The issue's target for each ML function image, uncompressed.
TARGET_BYTES = 1_500_000_000
#: The step that installs the shared stack in every ML Dockerfile (how its layer is found in the history).
SHARED_LAYER_MARK = "requirements-ml.txt"
SLIMMED_RECORD = "/opt/explain/slimmed.tsv"
#: The recorded baseline, before issue 15 item 6, in GB (1e9 bytes):
#: "local": every image as built then (docs/containers.md's figures table and `docker image ls`: the base
#: stand-in carried the whole stack and every function's requirements, so even the light images were 2.32 GB);
#: "aws_content": the same Dockerfiles and slim script on the plain base stand-in (what AWS would install
#: above its base), measured at the start of this change (docs/containers.md, "Sizes").
BASELINE_GB = {
    "GradientFunction": {"local": 2.32, "aws_content": 1.99},
    "PerturbationFunction": {"local": 2.32, "aws_content": 1.99},
    "ShapFunction": {"local": 2.32, "aws_content": 2.31},
    "InsightsFunction": {"local": 2.32, "aws_content": 1.99},
    "ApiFunction": {"local": 2.32, "aws_content": 0.238},
    "AuthorizerFunction": {"local": 2.32, "aws_content": 0.238},
}


def add_arguments(parser) -> None:
    parser.add_argument("--images-no-build", dest="images_build", action="store_false",
                        help="images section: measure the images as built, without running the build first")


def shared_layer_bytes(tag: str) -> int:
    """Size of the shared ML layer in an image's history (0 for an image without it)."""
    from devtools import containers

    history = containers.run(["docker", "history", "--human=false", "--no-trunc", "--format", "{{json .}}", tag])
    for line in history.stdout.splitlines():
        step = json.loads(line)
        if SHARED_LAYER_MARK in step["CreatedBy"] and "pip install" in step["CreatedBy"]:
            return int(step["Size"])
    return 0


def slimmed(tag: str) -> list[dict]:
    """What slim-site-packages.sh removed while building the image: run (1: shared layer, 2: own layer), item, bytes."""
    from devtools import containers

    completed = containers.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "cat", tag,
                                SLIMMED_RECORD], check=False)
    rows = []
    for line in completed.stdout.splitlines() if completed.returncode == 0 else []:
        run, item, size = line.split("\t")
        rows.append({"run": int(run), "item": item, "bytes": int(size)})
    return rows


def run(harness, args, results) -> dict:
    from devtools import containers

    if args.images_build:
        containers.ensure_engine()
        containers.ensure_base_image()
        containers.sam_build()
    base = containers.image_size(containers.BASE_IMAGE)
    images = []
    removed = {}
    for function in containers.image_functions():
        tag = containers.built_image(function)
        size = containers.image_size(tag)
        shared = shared_layer_bytes(tag)
        record = slimmed(tag)
        for row in record:
            layer = "shared" if row["run"] == 1 else "own"
            removed.setdefault(row["item"], {}).setdefault(layer, {})[function] = row["bytes"]
        images.append({
            "function": function, "tag": tag, "ml": shared > 0, "bytes": size, "base_bytes": base,
            "shared_bytes": shared, "own_bytes": size - base - shared,
            "own_removed_bytes": sum(row["bytes"] for row in record if row["run"] > 1),
            "target_ratio": size / TARGET_BYTES if shared else None,
            "baseline_gb": BASELINE_GB.get(function, {}),
        })
    shared_removed = {item: max(layers.get("shared", {}).values(), default=0) for item, layers in removed.items()}
    own_removed = {item: dict(layers.get("own", {})) for item, layers in removed.items()}
    return {"target_bytes": TARGET_BYTES, "base_image": containers.BASE_IMAGE, "images": images,
            "removed_shared": shared_removed, "removed_own": own_removed}


def gb(value):
    return None if value is None else value / 1e9


def tables(section, args) -> list[str]:
    images = section["images"]
    size_columns = [
        Column("function", lambda r: r["function"]),
        Column("kind", lambda r: "ML" if r["ml"] else "light"),
        Column("image GB", lambda r: gb(r["bytes"]), "{:.3f}"),
        Column("base GB", lambda r: gb(r["base_bytes"]), "{:.3f}"),
        Column("shared ML layer GB", lambda r: gb(r["shared_bytes"]) if r["ml"] else None, "{:.3f}"),
        Column("own layers GB", lambda r: gb(r["own_bytes"]), "{:.3f}"),
        Column("/ 1.5 GB target", lambda r: r["target_ratio"], "{:.3f}"),
        Column("before: local GB", lambda r: r["baseline_gb"].get("local"), "{:.2f}"),
        Column("before: AWS content GB", lambda r: r["baseline_gb"].get("aws_content"), "{:.3f}"),
        Column("now / before (AWS content)", lambda r: (gb(r["bytes"]) / r["baseline_gb"]["aws_content"]
                                                        if r["baseline_gb"].get("aws_content") else None), "{:.2f}"),
    ]
    over = [r["function"] for r in images if r["ml"] and r["bytes"] > section["target_bytes"]]
    size_notes = [
        "Uncompressed (docker image inspect .Size). Base: the local stand-in for "
        f"{section['base_image']} (Python + runtime interface client, like AWS's; AWS's own base differs in size).",
        "Shared ML layer: layers/requirements-*.txt installed and slimmed (stored once for the four ML images); "
        "own layers: the function's code, its requirements (shap: SHAP, XGBoost, numba) and caches.",
        "Before, local: every image as built before (the base stand-in carried the whole stack); before, AWS "
        "content: the same Dockerfiles on the plain base with the previous slim script (docs/containers.md).",
        "ML images over the target: " + (", ".join(over) if over else "none") + ".",
    ]
    removed_rows = [{"item": item, "shared": size,
                     "own": max(section["removed_own"].get(item, {}).values(), default=0)}
                    for item, size in sorted(section["removed_shared"].items(), key=lambda kv: -kv[1])]
    removed_rows.append({"item": "total", "shared": sum(r["shared"] for r in removed_rows),
                         "own": sum(r["own"] for r in removed_rows)})
    removed_columns = [
        Column("item removed by layers/slim-site-packages.sh", lambda r: r["item"]),
        Column("shared ML layer MB", lambda r: r["shared"] / 1e6, "{:.1f}"),
        Column("shap's own layer MB", lambda r: r["own"] / 1e6, "{:.1f}"),
    ]
    removed_notes = ["Bytes recorded by the script in the build (/opt/explain/slimmed.tsv in each image); "
                     "why each item is safe: docs/containers.md."]
    return [format_table("Function images: uncompressed size and layers", size_columns, images, size_notes),
            format_table("What the build removes", removed_columns, removed_rows, removed_notes)]
