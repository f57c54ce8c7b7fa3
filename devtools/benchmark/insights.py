"""Section ``insights``: time and memory of each insight kind (``explain_core.insights``) on the demo CNN and
on MobileNetV2, at the demo job's settings (``devtools.insights_demo.spec``), to choose the insights
function's MemorySize and to check its parts against the 900 s timeout.

Each (kind, model) runs in a fresh subprocess (``python -m devtools.benchmark.insights``), as a part runs
in a fresh execution environment: it loads the model as the model store does, measures the pass time the
planner measures (``jobs.measure_pass_seconds``), plans the kind's parts (``PlanContext`` with the
function's ``MAX_PART_SECONDS``), runs each part through a local ``PartContext`` (in-memory image sets, a
dict as the results bucket: ``concept_images.local_context``) and assembles them. Its peak RSS is the
child's own ``ru_maxrss`` (``os.wait4``); a baseline child that only imports TensorFlow and loads the model
shows the kind's own increment.

MobileNetV2 runs the same job with its names: the demo's classes circle, square, triangle, none are its
classes 0-3, the demo's ``last_conv`` its ``out_relu`` (the card's cam_layer, the default layer of TCAV,
CRAFT and the example-based kinds); the image sets are the demo's generated images (128 px), resized to
224 px as the function resizes uploaded images.
"""

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from devtools.benchmark.children import peak_rss_mb, run_child
from devtools.benchmark.subjects import SUBJECTS, Subject
from devtools.benchmark.timing import ratio

#: The module each (kind, model) subprocess runs.
CHILD = "devtools.benchmark.insights"
#: The kinds, in the registry's order (explain_core.insights.kinds.KINDS).
KIND_NAMES = ("feature_visualization", "tcav", "craft", "similar_examples", "prototypes")
#: Recommended MemorySize: the largest peak RSS times this margin (a warm environment runs parts of several
#: kinds one after the other; TensorFlow's allocator keeps what it took).
MEMORY_MARGIN = 1.5
#: Lambda's memory range (any whole MB between them); the recommendation is rounded up to this step.
LAMBDA_MIN_MB, LAMBDA_MAX_MB, MEMORY_STEP_MB = 128, 10240, 64
LAMBDA_TIMEOUT_S = 900
#: Lambda gives one vCPU per 1769 MB (AWS Lambda docs, "Configuring memory"), up to 6.
MB_PER_VCPU = 1769


# ---------------------------------------------------------------------------------------- the job
def subject_job(subject: Subject, small: bool) -> tuple[dict, dict[str, np.ndarray]]:
    """The demo job's specification and image sets (prefix -> uint8 images), in the subject's names."""
    from devtools import insights_demo, shapes

    spec = insights_demo.spec(small)
    sets = {insights_demo.PREFIX + folder: np.asarray(images)
            for folder, images in insights_demo.image_sets(small).items()}
    if subject.key == "demo":
        return spec, sets
    card = subject.card
    classes = {name: card.class_names[index] for index, name in enumerate(shapes.MODEL_CLASSES)}
    layers = {"last_conv": card.cam_layer}
    prefix = f"incoming/insights/{subject.name}/{subject.version}/"

    def renamed(value):
        if isinstance(value, dict):
            return {renamed(key): renamed(item) for key, item in value.items()}
        if isinstance(value, list):
            return [renamed(item) for item in value]
        if isinstance(value, str):
            value = classes.get(value, layers.get(value, value))
            if value.startswith(insights_demo.PREFIX):
                value = prefix + value[len(insights_demo.PREFIX):]
        return value

    def folder(key: str) -> str:
        # The case base's folders are its labels: the subject's class names.
        parts = key[len(insights_demo.PREFIX):].split("/")
        if parts[0] == "cases":
            parts[1] = classes[parts[1]]
        return prefix + "/".join(parts)

    return renamed(spec), {folder(key): images for key, images in sets.items()}


def part_context(loaded, sets: dict[str, np.ndarray], seed: int, batch_size: int, store: dict,
                 seconds_per_pass: float):
    """A PartContext as the job engine builds one per invocation: ``concept_images.local_context`` (the
    results bucket is ``store``), plus what the engine adds: ``files`` records what ``put`` wrote (the
    PartOutcome's files, which assemblies read), labelled sets (a case's label is its folder's name), and
    image sets loaded once per context."""
    from devtools import concept_images
    from explain_core.attribution import to_model_input
    from explain_core.images import resize
    from explain_core.insights.base import ImageBatch

    ctx = concept_images.local_context(loaded, sets, seed=seed, batch_size=batch_size, files=store)
    ctx.seconds_per_pass = seconds_per_pass
    put, unlabelled, loaded_sets = ctx.put, ctx.images, {}

    def put_recorded(name: str, body: bytes, content_type: str) -> str:
        key = put(name, body, content_type)
        ctx.files[name] = key
        return key

    def labelled_images(image_set) -> ImageBatch:
        # As the engine lists a prefix: every image under it in key order, spread over `count`.
        card = loaded.card
        found = sorted((f"{folder}{index:03d}.png", image, folder[len(image_set.prefix):].strip("/").split("/")[-1])
                       for folder, images in sets.items() if folder.startswith(image_set.prefix)
                       for index, image in enumerate(images))
        if len(found) > image_set.count:
            found = [found[int(i * len(found) / image_set.count)] for i in range(image_set.count)]
        pixels = np.stack([resize(image, card.input_height, card.input_width) for _, image, _ in found])
        return ImageBatch(inputs=to_model_input(pixels, card), pixels=pixels, keys=[key for key, _, _ in found],
                          labels=[label for _, _, label in found])

    def images(image_set, labelled: bool = False) -> ImageBatch:
        identity = (image_set.model_dump_json(), labelled)
        if identity not in loaded_sets:
            loaded_sets[identity] = labelled_images(image_set) if labelled else unlabelled(image_set)
        return loaded_sets[identity]

    ctx.put, ctx.images = put_recorded, images
    return ctx


# ---------------------------------------------------------------------------------------- in the subprocess
def load_subject(key: str):
    """The subject's model as the model store loads it, as a LoadedModel (with its background, if any)."""
    from explain_core.model_store import LoadedModel

    subject = SUBJECTS[key]()
    started = time.perf_counter()
    model = subject.model()
    load_s = time.perf_counter() - started
    loaded = LoadedModel(name=subject.name, version=subject.version, model=model, card=subject.card,
                         model_etag="benchmark", card_etag="benchmark", load_seconds=load_s, source="tmp",
                         background=subject.background())
    return subject, loaded, load_s


def choose_parts(parts: list, max_parts: int) -> list:
    """All parts, or the ``max_parts`` with the largest estimates (the longest part is always measured),
    in plan order."""
    if not max_parts or len(parts) <= max_parts:
        return list(parts)
    kept = {part.id for part in sorted(parts, key=lambda p: -p.estimated_seconds)[:max_parts]}
    return [part for part in parts if part.id in kept]


def run_kind(model_key: str, kind_name: str, small: bool, max_parts: int) -> dict:
    """Plan, run and assemble one kind on one model in this process; times, estimates and RSS."""
    return run_loaded_kind(*load_subject(model_key), model_key, kind_name, small, max_parts)


def run_sequence(model_key: str, kinds: list[str], small: bool, max_parts: int) -> dict:
    """Every kind in turn in this process, as a warm execution environment runs parts of different kinds one
    after the other (what TensorFlow and the libraries keep from one kind adds to the next's peak)."""
    subject, loaded, load_s = load_subject(model_key)
    results = [run_loaded_kind(subject, loaded, load_s, model_key, kind, small, max_parts) for kind in kinds]
    return {
        "kind": "all", "model": model_key, "load_s": load_s, "rss_loaded_mb": results[0]["rss_loaded_mb"],
        "seconds_per_pass": results[0]["seconds_per_pass"], "planned": sum(r["planned"] for r in results),
        "planned_estimate_s": sum(r["planned_estimate_s"] for r in results),
        "parts": [part for r in results for part in r["parts"]], "spec": {r["kind"]: r["spec"] for r in results},
        "assembly_s": sum(r["assembly_s"] for r in results),
        "assembly_error": next((r["assembly_error"] for r in results if r["assembly_error"]), None),
        "files": sum(r["files"] for r in results), "file_bytes": sum(r["file_bytes"] for r in results),
        "rss_self_mb": peak_rss_mb(), "kinds": results,
    }


def run_loaded_kind(subject: Subject, loaded, load_s: float, model_key: str, kind_name: str, small: bool,
                    max_parts: int) -> dict:
    """:func:`run_kind` with the model loaded: the plan's parts and estimates, each part's seconds and the
    peak RSS after it, the assembly's seconds. A part that raises is recorded as failed, as the engine does."""
    from explain_core.insights.base import PartOutcome, PlanContext
    from explain_core.insights.jobs import MAX_PART_SECONDS, measure_pass_seconds, part_batch_size
    from explain_core.insights.kinds import BY_NAME
    from explain_core.insights.spec import InsightsSpec
    from explain_core.results import now_iso, strict_json
    from explain_core.session import DEFAULT_BATCH_SIZE

    result = {"kind": kind_name, "model": model_key, "load_s": load_s, "rss_loaded_mb": peak_rss_mb()}
    spec_document, sets = subject_job(subject, small)
    job = InsightsSpec.model_validate(spec_document)
    kind, spec = BY_NAME[kind_name], getattr(job, kind_name)
    result["spec"] = spec.model_dump(mode="json", by_alias=True)
    seconds_per_pass = measure_pass_seconds(loaded)
    started = time.perf_counter()
    plan = kind.plan(spec, PlanContext(loaded=loaded, seconds_per_pass=seconds_per_pass,
                                       max_part_seconds=MAX_PART_SECONDS))
    result.update(seconds_per_pass=seconds_per_pass, plan_s=time.perf_counter() - started,
                  max_part_seconds=MAX_PART_SECONDS, planned=len(plan),
                  planned_estimate_s=sum(part.estimated_seconds for part in plan))
    store, outcomes, rows = {}, [], []
    for part in choose_parts(plan, max_parts):
        ctx = part_context(loaded, sets, job.seed, part_batch_size(loaded.card, DEFAULT_BATCH_SIZE), store,
                       seconds_per_pass)
        started, error, summary = time.perf_counter(), None, {}
        try:
            summary = kind.run_part(spec, part, ctx)
            strict_json(summary)
        except Exception as exc:  # recorded as the engine records a failed part; the others still run
            error = f"{type(exc).__name__}: {exc}"[:300]
        seconds = time.perf_counter() - started
        outcomes.append(PartOutcome(
            id=part.id, kind=part.kind, title=part.title, status="failed" if error else "succeeded",
            summary=summary if not error else {}, files=ctx.files, error={"message": error} if error else None,
            seconds=round(seconds, 3), finished_at=now_iso()))
        rows.append({"id": part.id, "title": part.title, "estimated_s": part.estimated_seconds, "measured_s": seconds,
                     "ratio": ratio(seconds, part.estimated_seconds), "error": error, "rss_mb": peak_rss_mb()})
    result["parts"] = rows
    ctx = part_context(loaded, sets, job.seed, part_batch_size(loaded.card, DEFAULT_BATCH_SIZE), store,
                       seconds_per_pass)
    started = time.perf_counter()
    try:
        strict_json(kind.assemble(spec, outcomes, ctx))
        result["assembly_error"] = None
    except Exception as exc:
        result["assembly_error"] = f"{type(exc).__name__}: {exc}"[:300]
    result.update(assembly_s=time.perf_counter() - started, files=len(store),
                  file_bytes=sum(len(body) for body in store.values()), rss_self_mb=peak_rss_mb())
    return result


def run_baseline(model_key: str) -> dict:
    """Only TensorFlow and the model, loaded: what every part's process holds before its kind's work."""
    _, _, load_s = load_subject(model_key)
    return {"model": model_key, "load_s": load_s, "rss_self_mb": peak_rss_mb()}


def main(argv=None) -> None:
    """The subprocess: one (kind, model), or the model-loaded baseline; writes its JSON to ``--output``."""
    parser = argparse.ArgumentParser(prog="python -m devtools.benchmark.insights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(SUBJECTS), required=True)
    parser.add_argument("--kind", choices=(*KIND_NAMES, "all", "baseline"), required=True,
                        help="a kind; all: every kind in turn in one process; baseline: only load the model")
    parser.add_argument("--kinds", default=",".join(KIND_NAMES), help="with --kind all: the kinds, in turn")
    parser.add_argument("--small", action="store_true", help="the demo job's small settings (spec(small=True))")
    parser.add_argument("--max-parts", type=int, default=0, help="parts run per kind, the largest estimates (0: all)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):  # Keras and Xplique print; the result is the file
        if args.kind == "baseline":
            result = run_baseline(args.model)
        elif args.kind == "all":
            result = run_sequence(args.model, args.kinds.split(","), args.small, args.max_parts)
        else:
            result = run_kind(args.model, args.kind, args.small, args.max_parts)
    args.output.write_text(json.dumps(result, indent=2))


# ---------------------------------------------------------------------------------------- in the benchmark
def kind_row(result: dict | None, kind: str, model: str, maxrss_mb: float, baseline_mb: float | None,
             wall: float, error: str | None) -> dict:
    """A table row from a child's result."""
    peak = result and result["rss_self_mb"]
    row = {"kind": kind, "model": model, "peak_rss_mb": peak, "baseline_rss_mb": baseline_mb,
           "over_baseline_mb": peak - baseline_mb if peak and baseline_mb else None, "ru_maxrss_mb": maxrss_mb,
           "wall_s": wall, "error": error}
    if result is None:
        return row
    parts = result["parts"]
    measured = [part["measured_s"] for part in parts]
    estimated = sum(part["estimated_s"] for part in parts)
    failed = [part for part in parts if part["error"]]
    row.update(
        planned=result["planned"], run=len(parts), seconds_per_pass=result["seconds_per_pass"],
        planned_estimate_s=result["planned_estimate_s"], estimated_s=estimated, measured_s=sum(measured),
        ratio=ratio(sum(measured), estimated), longest_part_s=max(measured, default=None),
        longest_estimate_s=max((part["estimated_s"] for part in parts), default=None),
        assembly_s=result["assembly_s"], load_s=result["load_s"], parts=parts, spec=result["spec"],
        files=result["files"], file_bytes=result["file_bytes"], rss_loaded_mb=result["rss_loaded_mb"],
        error=error or (failed[0]["error"] if failed else result["assembly_error"]),
    )
    return row


def recommendation(rows: list[dict], cpus: int) -> dict | None:
    """MemorySize from the largest peak (x MEMORY_MARGIN, rounded up to MEMORY_STEP_MB within Lambda's range),
    and the longest part against the 900 s timeout, scaled to the vCPUs that memory gives."""
    peaks = [row for row in rows if row.get("peak_rss_mb") and row.get("measured_s") is not None]
    if not peaks:
        return None
    largest = max(peaks, key=lambda row: row["peak_rss_mb"])
    wanted = math.ceil(largest["peak_rss_mb"] * MEMORY_MARGIN / MEMORY_STEP_MB) * MEMORY_STEP_MB
    memory = min(LAMBDA_MAX_MB, max(LAMBDA_MIN_MB, wanted))
    vcpus = min(6.0, memory / MB_PER_VCPU)
    longest = max(peaks, key=lambda row: row["longest_part_s"] or 0)
    # Assumes time scales with cores (an upper bound for TensorFlow's batched ops on fewer cores).
    slowdown = max(1.0, cpus / vcpus)
    return {"largest_peak_mb": largest["peak_rss_mb"], "largest_peak": f"{largest['kind']} on {largest['model']}",
            "margin": MEMORY_MARGIN, "memory_mb": memory, "capped": wanted > LAMBDA_MAX_MB, "vcpus": round(vcpus, 2),
            "measured_cpus": cpus,
            "longest_part_s": longest["longest_part_s"], "longest_part": f"{longest['kind']} on {longest['model']}",
            "longest_part_at_memory_s": longest["longest_part_s"] * slowdown, "timeout_s": LAMBDA_TIMEOUT_S,
            "share_of_timeout": longest["longest_part_s"] * slowdown / LAMBDA_TIMEOUT_S}


def benchmark_insights(harness, args) -> dict:
    """One row per (kind, model): parts, estimated and measured seconds, peak RSS; the model-loaded baselines
    and the recommended MemorySize."""
    small = ["--small"] if args.insights_small else []
    rows, baselines = [], {}
    for model in args.models:
        SUBJECTS[model]()  # builds (and caches) the model once, before any child needs it
        result, maxrss, wall, error = run_child(CHILD, ["--model", model, "--kind", "baseline"], harness.log,
                                                args.insights_timeout)
        peak = result and result["rss_self_mb"]
        baselines[model] = {"peak_rss_mb": peak, "ru_maxrss_mb": maxrss, "load_s": result and result["load_s"],
                            "wall_s": wall, "error": error or (None if result else "no result")}
        print(f"[insights] {model}: TensorFlow + model loaded: {peak or 0:.0f} MB peak RSS, {wall:.1f} s"
              + (f"  FAILED {baselines[model]['error']}" if baselines[model]["error"] else ""), flush=True)
        baseline = None if baselines[model]["error"] else baselines[model]["peak_rss_mb"]
        # The sequence: every kind in one process, one part each (the largest estimate) unless fewer are asked.
        sequence = ["--model", model, "--kind", "all", "--kinds", ",".join(args.insights_kinds), *small,
                    "--max-parts", str(args.insights_max_parts or 1)]
        runs = [(kind, ["--model", model, "--kind", kind, *small, "--max-parts", str(args.insights_max_parts)])
                for kind in args.insights_kinds]
        runs += [("all", sequence)] if args.insights_sequence else []
        for kind, arguments in runs:
            result, maxrss, wall, error = run_child(CHILD, arguments, harness.log, args.insights_timeout)
            row = kind_row(result, kind, model, maxrss, baseline, wall, error)
            rows.append(row)
            status = f"  FAILED {row['error']}" if row["error"] else ""
            done = (f"{row['run']}/{row['planned']} parts, estimated {row['estimated_s']:.1f} s, measured "
                    f"{row['measured_s']:.1f} s" if "run" in row else "no result")
            print(f"[insights] {kind} on {model}: {done}, {row['peak_rss_mb'] or 0:.0f} MB peak RSS, {wall:.1f} s"
                  f"{status}", flush=True)
    settings = {"small": args.insights_small, "max_parts": args.insights_max_parts, "kinds": args.insights_kinds,
                "sequence": args.insights_sequence, "timeout_s": args.insights_timeout}
    return {"rows": rows, "baselines": baselines, "settings": settings,
            "recommendation": recommendation(rows, os.cpu_count() or 1)}


if __name__ == "__main__":
    main()
