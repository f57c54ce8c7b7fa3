"""Section ``overhead``: what the gradient handler adds to the raw Xplique calls, before and after.

One SQS event of N demo images (one message each), every upload asking for the same M one-pass
methods, through the real handler, warm; beside it the raw calls (each method's
``explainer.explain()`` on the same N preprocessed images, built as the session builds them,
warm). (handler - raw) / N is the handler's overhead per image: S3 reads and writes, decoding,
prediction, rendering, manifest, gallery.

Measured twice in one run: on the baseline commit's code (``--overhead-baseline``, by default the
commit before issue 15, in a child process: :mod:`devtools.benchmark.baseline`) and on the
working tree's, with the same emulator kind, model, images and methods; the table prints both
and the ratio of their overheads. For the working tree, each step's time (timers around the
session's and the library's functions, summed over threads) and the S3 requests per input.
"""

import argparse
import contextlib
import functools
import time
from collections import Counter

from devtools.benchmark.baseline import ISSUE_15_BASELINE, run_at_commit
from devtools.benchmark.harness import Harness, failure
from devtools.benchmark.report import Column, format_table
from devtools.benchmark.requests import RequestCounter
from devtools.benchmark.timing import ratio
from explain_core.registry import GRADIENT, REGISTRY

SECTION = "overhead"
DEFAULT_METHODS = ("Saliency", "GradientInput", "GradCAM", "GradCAMPP")
#: Steps timed in the working tree's handler: (step, "module:attribute" of each function timed as part of it).
STEPS = (
    ("download", ("explain_core.session:ExplanationSession.download",)),
    ("decode", ("explain_core.modalities.image:ImageModality.decode",)),
    ("predict", ("explain_core.attribution:raw_outputs",)),
    ("explain", ("explain_core.attribution:run_method",)),
    ("render", ("explain_core.rendering:render_heatmap", "explain_core.rendering:npy_bytes")),
    ("write", ("explain_core.results:ResultWriter.put_many",)),
    ("manifest", ("explain_core.results:ResultWriter.put_manifest",)),
    ("gallery", ("explain_core.session:input_preview", "explain_core.gallery:GalleryWriter.write_page",
                 "explain_core.gallery:GalleryWriter.add_to_indexes")),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("overhead section")
    group.add_argument("--overhead-images", type=int, default=8,
                       help="demo images in the one SQS event (default: 8, the template's BatchSize)")
    group.add_argument("--overhead-methods", default=",".join(DEFAULT_METHODS),
                       help=f"methods every upload asks for (default: {','.join(DEFAULT_METHODS)})")
    group.add_argument("--overhead-repeats", type=int, default=3,
                       help="timed handler invocations and raw calls, the best kept (default: 3)")
    group.add_argument("--overhead-baseline", default=ISSUE_15_BASELINE,
                       help=f"commit measured beside the working tree (default: {ISSUE_15_BASELINE}; 'none': skip)")


class StepTimer:
    """Wall seconds spent inside named functions (summed over the threads that call them)."""

    def __init__(self):
        self.seconds: Counter = Counter()

    @contextlib.contextmanager
    def patched(self, steps=STEPS):
        import importlib

        saved = []
        for step, targets in steps:
            for target in targets:
                module_name, attribute = target.split(":")
                owner = importlib.import_module(module_name)
                *path, name = attribute.split(".")
                for part in path:
                    owner = getattr(owner, part)
                original = owner.__dict__[name]
                saved.append((owner, name, original))
                setattr(owner, name, self._timed(step, original))
        try:
            yield self
        finally:
            for owner, name, original in reversed(saved):
                setattr(owner, name, original)

    def _timed(self, step: str, function):
        raw = function.__func__ if isinstance(function, staticmethod) else function

        @functools.wraps(raw)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return raw(*args, **kwargs)
            finally:
                self.seconds[step] += time.perf_counter() - started

        return staticmethod(timed) if isinstance(function, staticmethod) else timed


def measure_overhead(harness: Harness, images: int, methods: list[str], repeats: int, steps: bool = False) -> dict:
    """Raw and handler seconds for ``images`` demo images, each asking for every one of ``methods``.

    Runs on whatever explain_core is imported (the working tree, or a commit's through
    :func:`devtools.benchmark.baseline.run_at_commit`): only APIs both have are used.
    """
    from devtools.benchmark.methods import measure_raw
    from devtools.benchmark.subjects import demo_subject
    from devtools.benchmark.timing import model_inputs, predicted_targets

    subject = demo_subject()
    harness.publish(subject)
    specs = [REGISTRY[name] for name in methods]
    pixels = subject.images(images)
    inputs = model_inputs(subject, pixels)
    batch_size = harness.session_batch_size(GRADIENT, subject.card)
    targets = predicted_targets(subject.model(), inputs, subject.card, batch_size)
    raw = {spec.name: measure_raw(spec, subject, spec.resolve({}, subject.input_size), inputs, targets, batch_size,
                                  repeats) for spec in specs}

    source = harness.source(GRADIENT)
    metadata = {"methods": ",".join(methods)}
    timer, requests = StepTimer(), RequestCounter()
    runs = []
    for phase in ["warm0", "warm1"] + [f"timed{i}" for i in range(repeats)]:
        keys = harness.upload(GRADIENT, subject, f"overhead-{phase}", pixels, metadata)
        messages = harness.receive(GRADIENT, keys)
        timed = phase.startswith("timed")
        before_steps, before_requests = Counter(timer.seconds), len(requests.calls)
        with (timer.patched() if timed and steps else contextlib.nullcontext()), \
                (requests.installed() if timed else contextlib.nullcontext()):
            cpu_started = time.process_time()
            source.invoke(messages)
            cpu_s = time.process_time() - cpu_started
        problem = next((reason for reason in (failure(harness.outcome(key)) for key in keys) if reason), None)
        if problem:
            raise RuntimeError(f"the handler did not explain every image ({phase}): {problem}")
        if timed:
            runs.append({"handler_s": source.handler.durations[-1], "handler_cpu_s": cpu_s,
                         "steps": dict(timer.seconds - before_steps),
                         "requests": dict(Counter(call.operation for call in requests.calls[before_requests:]
                                                  if call.service == "s3"))})
    best = min(runs, key=lambda run: run["handler_s"])
    raw_s = sum(raw.values())
    return {
        "images": images, "methods": methods, "raw_by_method_s": raw, "raw_s": raw_s,
        "handler_s": best["handler_s"], "handler_runs_s": [run["handler_s"] for run in runs],
        "handler_cpu_s": best["handler_cpu_s"],
        "overhead_per_image_s": (best["handler_s"] - raw_s) / images,
        "steps_per_image_s": {step: seconds / images for step, seconds in best["steps"].items()},
        "s3_requests": best["requests"], "s3_requests_per_image": sum(best["requests"].values()) / images,
    }


def run(harness: Harness, args, results: dict) -> dict:
    methods = [REGISTRY[name.strip()].name for name in args.overhead_methods.split(",") if name.strip()]
    kwargs = {"images": args.overhead_images, "methods": methods, "repeats": args.overhead_repeats}
    rows, baseline_error = [], None
    if args.overhead_baseline.lower() != "none":
        print(f"[overhead] measuring {args.overhead_baseline} in a child process", flush=True)
        try:
            baseline = run_at_commit(args.overhead_baseline, "devtools.benchmark.overhead:measure_overhead", kwargs)
            rows.append({"code": args.overhead_baseline, **baseline})
        except Exception as exc:  # reported in the table's notes; the working tree is still measured
            baseline_error = f"{type(exc).__name__}: {exc}"[:1000]
            print(f"[overhead] the baseline failed: {baseline_error}", flush=True)
    print("[overhead] measuring the working tree", flush=True)
    rows.append({"code": "working tree", **measure_overhead(harness, steps=True, **kwargs)})
    if len(rows) == 2:
        rows[1]["overhead_vs_baseline"] = ratio(rows[1]["overhead_per_image_s"], rows[0]["overhead_per_image_s"])
        rows[1]["handler_vs_baseline"] = ratio(rows[1]["handler_s"], rows[0]["handler_s"])
        rows[1]["cpu_vs_baseline"] = ratio(rows[1]["handler_cpu_s"], rows[0]["handler_cpu_s"])
    return {"rows": rows, "baseline": args.overhead_baseline, "baseline_error": baseline_error}


COLUMNS = [
    Column("code", lambda r: r["code"]),
    Column("raw s/img", lambda r: r["raw_s"] / r["images"], "{:.4f}"),
    Column("handler s/img", lambda r: r["handler_s"] / r["images"], "{:.4f}"),
    Column("(handler-raw) s/img", lambda r: r["overhead_per_image_s"], "{:.4f}"),
    Column("handler/raw", lambda r: ratio(r["handler_s"], r["raw_s"]), "{:.1f}"),
    Column("S3 req/img", lambda r: r["s3_requests_per_image"], "{:.1f}"),
    Column("overhead vs baseline", lambda r: r.get("overhead_vs_baseline"), "{:.2f}"),
    Column("handler CPU s/img", lambda r: r.get("handler_cpu_s", 0) / r["images"], "{:.4f}"),
    Column("CPU vs baseline", lambda r: r.get("cpu_vs_baseline"), "{:.2f}"),
]


def tables(section: dict, args) -> list[str]:
    rows = section["rows"]
    first = rows[-1]
    title = (f"Handler overhead: {first['images']} demo images x {len(first['methods'])} methods "
             f"({', '.join(first['methods'])}) in one SQS event")
    notes = [
        "raw: each method's explainer.explain() on the preprocessed batch, built as the session builds it, warm",
        f"  (best of {args.overhead_repeats}); summed over the methods. handler: the real gradient handler on one",
        "  event of one message per image, every upload asking for all the methods; warm (two invocations first),",
        f"  best of {args.overhead_repeats}; S3 I/O on the moto emulator in a process of its own. The emulator",
        "  spends about 5 ms of CPU per request here (the handler's client about 1 ms), so at 16-22 requests per",
        "  image it bounds the handler's wall time on 2 cores; on AWS requests overlap at network latency instead.",
        "handler CPU s/img: CPU time of the handler's process (all its threads) during the invocation, the",
        "  emulator's excluded; CPU vs baseline: its ratio to the first row's.",
        "(handler-raw) s/img: what the handler adds per image; overhead vs baseline: its ratio to the first row's.",
        f"The {section['baseline']} row runs that commit's explain_core and functions in a child process, measured",
        "  by the same devtools code (devtools.benchmark.baseline); both rows in the same run, same images.",
        "S3 req/img: S3 API calls made during the best timed invocation (all clients: RequestCounter), per image.",
        *([f"The {section['baseline']} measurement FAILED: {section['baseline_error']}"]
          if section.get("baseline_error") else []),
    ]
    steps = first.get("steps_per_image_s") or {}
    step_rows = [{"step": step, "s": steps.get(step, 0.0)} for step, _ in STEPS]
    step_notes = [
        "Seconds per image inside each step's functions in the best timed invocation, summed over the threads",
        "  that ran them (steps overlap in time: their sum may exceed the handler's wall time). download: the",
        "  input GET; decode: the image decoding; predict: model calls for predictions and pass timing; explain:",
        "  run_method; render: overlay and raw heatmap PNGs and .npy; write: output PUTs; manifest: its",
        "  compare-and-swap; gallery: preview, input page and the model's index.",
        "S3 requests in that invocation: " + ", ".join(f"{name} {count}" for name, count in
                                                        sorted(first.get("s3_requests", {}).items())),
    ]
    return [
        format_table(title, COLUMNS, rows, notes),
        format_table(f"Handler steps, working tree ({first['images']} images)",
                     [Column("step", lambda r: r["step"]), Column("s/img", lambda r: r["s"], "{:.4f}")],
                     step_rows, step_notes),
    ]
