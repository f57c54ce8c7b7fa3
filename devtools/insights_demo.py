"""The insights demo on the shapes model: its image sets, its job specification, and a job run on the emulator.

The image sets are generated (devtools/shapes.py, devtools/concept_images.py) and uploaded under
``incoming/insights/shapes/v1/`` (only ``.json`` files there start a job):

- ``concepts/round/``, ``concepts/random-<i>/``: TCAV's concept and its random counter-examples;
- ``classes/<class>/``: images of a class (TCAV's tested classes, CRAFT's images);
- ``cases/<class>/``: a labelled case base (similar examples, prototypes);
- ``queries/``: images whose similar examples are shown.

:func:`spec` is the job: feature visualizations of each class logit and of channels of the last
convolution, TCAV of "round" for circle and square, CRAFT concepts of triangle, similar examples and
prototypes. ``small=True`` is the main job's version (fewer steps and images).
"""

import io
import json
import time

from devtools import concept_images, demo_model, shapes

MODEL, VERSION = demo_model.NAME, demo_model.VERSION
PREFIX = f"incoming/insights/{MODEL}/{VERSION}/"
JOB_NAME = "demo"
#: TCAV's random sets (its t-test compares this many concept CAVs with random ones) and the images of the
#: concept, of each random set and of each tested class, small and full: with fewer images the concept's and
#: classes' own sampling noise moves the scores by ~0.1 from one seed to the next (see concept_images).
TCAV_RANDOM_SETS, TCAV_IMAGES = {True: 6, False: 10}, {True: 60, False: 100}
CASES_PER_CLASS = 16
QUERIES = ("circle", "triangle")
SEED = 7
#: Channels of last_conv shown: the one most selective for circle, square and triangle (mean activation on the
#: class minus on the others: 7, 15, 20) and the most active one overall (44), measured on the demo model (it
#: is trained deterministically). The channels its logits weigh most include a nearly dead one (8).
CHANNELS = (7, 15, 20, 44)


def image_sets(small: bool = True) -> dict[str, list]:
    """Folder (under :data:`PREFIX`) -> uint8 images, all deterministic."""
    count, tcav_images = 24 if small else 40, TCAV_IMAGES[small]
    sets = {"concepts/round/": list(concept_images.round_concept(tcav_images, SEED))}
    for index, images in enumerate(concept_images.random_sets(TCAV_RANDOM_SETS[small], tcav_images, SEED)):
        sets[f"concepts/random-{index}/"] = list(images)
    for name in ("circle", "square"):  # TCAV's classes
        sets[f"classes/{name}/"] = list(concept_images.class_images(name, tcav_images, SEED))
    sets["classes/triangle/"] = list(concept_images.class_images("triangle", count, SEED))  # CRAFT's
    images, labels, _ = shapes.dataset(CASES_PER_CLASS * len(shapes.MODEL_CLASSES), seed=SEED + 500, with_none=True)
    for name in shapes.MODEL_CLASSES:
        sets[f"cases/{name}/"] = [image for image, label in zip(images, labels, strict=True)
                                  if shapes.MODEL_CLASSES[label] == name]
    queries, query_labels, _ = shapes.dataset(12, seed=SEED + 900)
    sets["queries/"] = [next(image for image, label in zip(queries, query_labels, strict=True)
                             if shapes.CLASSES[label] == name) for name in QUERIES]
    return sets


def upload_image_sets(s3, bucket: str, small: bool = True) -> int:
    """Upload :func:`image_sets` as PNG files; returns how many."""
    from PIL import Image

    uploaded = 0
    for folder, images in image_sets(small).items():
        for index, image in enumerate(images):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            name = f"{QUERIES[index]}-{index}.png" if folder == "queries/" else f"{index:03d}.png"
            s3.put_object(Bucket=bucket, Key=f"{PREFIX}{folder}{name}", Body=buffer.getvalue(),
                          ContentType="image/png")
            uploaded += 1
    return uploaded


def _prefix(folder: str, count: int) -> dict:
    return {"source": "prefix", "prefix": PREFIX + folder, "count": count}


def spec(small: bool = True) -> dict:
    """The demo's job specification (docs/insights.md explains each field)."""
    count = 24 if small else 40
    return {
        "title": "What the shapes model learned",
        "seed": SEED,
        "feature_visualization": {
            "objectives": [{"class": name} for name in shapes.MODEL_CLASSES[:3]]
                          + [{"layer": "last_conv", "type": "channel", "indexes": list(CHANNELS)}],
            "steps": 256,
            "learning_rate": 0.2,  # measured: at Xplique's 0.05 the 64 px images stay faint after 256 steps
        },
        "tcav": {
            "concept": {"name": "round", "images": _prefix("concepts/round/", TCAV_IMAGES[small])},
            "random": [_prefix(f"concepts/random-{i}/", TCAV_IMAGES[small]) for i in range(TCAV_RANDOM_SETS[small])],
            "classes": {name: _prefix(f"classes/{name}/", TCAV_IMAGES[small]) for name in ("circle", "square")},
        },
        "craft": {
            "classes": ["triangle"],
            "class_images": {"triangle": _prefix("classes/triangle/", count)},
            "number_of_concepts": 4,
            "nb_design": 16 if small else 32,
        },
        "similar_examples": {
            "queries": _prefix("queries/", len(QUERIES)),
            "cases": _prefix("cases/", CASES_PER_CLASS * len(shapes.MODEL_CLASSES)),
            "k": 6,
        },
        "prototypes": {
            "cases": _prefix("cases/", CASES_PER_CLASS * len(shapes.MODEL_CLASSES)),
            "classes": list(shapes.CLASSES),
            "nb_prototypes": 4,
        },
    }


def spec_key(name: str = JOB_NAME) -> str:
    return f"{PREFIX}{name}.json"


def start_job(s3, bucket: str, job_spec: dict, name: str = JOB_NAME) -> str:
    """Upload a job specification (its upload event starts the job); returns its key."""
    key = spec_key(name)
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(job_spec).encode(), ContentType="application/json")
    return key


def run_job(source, s3, settings, key: str, *, timeout: float, on_part=None) -> dict:
    """Poll the insights queue with the function's handler until the job's report (or error record) exists;
    ``on_part(progress)`` is called after each invocation. Returns the last progress."""
    from explain_core.insights.jobs import job_progress

    deadline, progress = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        batch = source.poll(wait=False)
        progress = job_progress(s3, settings, key)
        if batch is not None and on_part is not None:
            on_part(progress, batch)
        if progress["status"] in ("succeeded", "partial", "failed"):
            return progress
        if batch is None:
            time.sleep(0.2)
    return progress


def tcav_table(report: dict) -> str | None:
    """The TCAV scores of a report as text: class, score, random score, p-value, significant."""
    section = report.get("kinds", {}).get("tcav")
    if not section or not section.get("classes"):
        return None
    rows = [("class", "TCAV score", "random", "p-value", "significant")]
    for row in section["classes"]:
        if row.get("status") != "succeeded":
            rows.append((row["class"], "failed", "", "", ""))
            continue
        rows.append((row["class"], f"{row['score_mean']:.2f} ± {row['score_std']:.2f}",
                     f"{row['random_mean']:.2f} ± {row['random_std']:.2f}", f"{row['p_value']:.2g}",
                     "yes" if row["significant"] else "no"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def demo_round(deployment, log, output_dir, *, timeout: float, small: bool = True) -> bool:
    """The main job's insights: upload the image sets and the job, run its parts with the real handler,
    print progress (one line per part), the TCAV table and where the pictures are. True when it succeeded."""
    from devtools.local.lambda_service import SqsEventSource
    from explain_core.insights.jobs import INDEX_FILE, PART_FILE, job_ref
    from explain_core.keys import KeyLayout
    from explain_core.settings import Settings

    s3 = deployment.client("s3")
    settings = Settings(input_bucket=deployment.bucket("InputBucket"),
                        results_bucket=deployment.bucket("ResultsBucket"),
                        model_bucket=deployment.bucket("ModelBucket"))
    count = upload_image_sets(s3, settings.input_bucket, small)
    log(f"insights: uploaded {count} generated images under s3://{settings.input_bucket}/{PREFIX} "
        "(concepts, classes, a labelled case base, queries)")
    key = start_job(s3, settings.input_bucket, spec(small))
    log(f"insights: job s3://{settings.input_bucket}/{key}: feature visualization, TCAV, CRAFT, similar examples, "
        "prototypes")
    job = job_ref(KeyLayout(settings), key)
    source = SqsEventSource(deployment, deployment.insights_function())
    seen: set[str] = set()
    announced = []

    def on_part(progress, batch):
        if progress.get("parts_total") and not announced:
            announced.append(True)
            log(f"insights: planned {progress['parts_total']} parts (estimated "
                f"{progress.get('estimated_seconds') or 0:.0f} s), one SQS message each")
        for message in batch.messages:
            named = json.loads(message["Body"]).get("insights_part", {})
            part = named.get("part")
            if not part or part in seen:
                continue
            seen.add(part)
            try:
                outcome = json.loads(s3.get_object(Bucket=settings.results_bucket,
                                                   Key=job.part_prefix(named["spec_etag"], part) + PART_FILE)
                                     ["Body"].read())
            except s3.exceptions.NoSuchKey:
                log(f"insights: part {part} will be retried")
                continue
            log(f"insights: [{progress.get('parts_done', 0) + progress.get('parts_failed', 0)}/"
                f"{progress.get('parts_total', '?')}] {outcome['status']:<9} {outcome['title']} "
                f"({outcome['seconds']:.1f} s)")

    progress = run_job(source, s3, settings, key, timeout=timeout, on_part=on_part)
    status = progress.get("status")
    if status not in ("succeeded", "partial"):
        log(f"insights: job {status}: {json.dumps(progress.get('error') or progress)[:500]}")
        return False
    report = progress["report"]
    log(f"insights: job {status} in {report['seconds']['parts']:.0f} s of parts; "
        f"{len(report['pictures'])} pictures")
    table = tcav_table(report)
    if table:
        print()
        print(f"TCAV of the concept \"round\" at layer {report['kinds']['tcav'].get('layer')} "
              f"(scores: share of a class's images whose logit rises towards the concept):")
        print(table)
        print()
    local = output_dir / job.key(INDEX_FILE)
    log(f"insights: pictures and report under {local.parent}/ (open {local.name} in a browser):")
    for picture in report["pictures"]:
        log(f"  {output_dir / picture}")
    return status == "succeeded"
