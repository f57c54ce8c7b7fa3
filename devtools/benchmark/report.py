"""The report: one plain-text table per section, with notes saying what each column measures."""

import dataclasses
from collections.abc import Callable

from devtools.benchmark.tabular import TABULAR_WIDE_BATCH
from devtools.benchmark.timing import FORWARD_BATCH, ratio
from explain_core.registry import GRADIENT, SHAP


@dataclasses.dataclass
class Column:
    """A table column: its header, how to get the value from a row, how to format it."""

    header: str
    value: Callable[[dict], object]
    fmt: str = "{}"


def number(fmt: str):
    """A cell formatter that leaves missing values as '-'."""
    return lambda v: "-" if v is None else fmt.format(v)


def format_table(title: str, columns: list[Column], rows: list[dict], notes: list[str]) -> str:
    """Plain-text table: numbers right-aligned, the last column left-aligned (it may be long)."""
    cells = [[number(c.fmt)(c.value(row)) for c in columns] for row in rows]
    widths = [max([len(c.header)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values):
        last = len(columns) - 1
        aligned = zip(values, widths, strict=True)
        return "  ".join(v.ljust(w) if i in (0, last) else v.rjust(w) for i, (v, w) in enumerate(aligned)).rstrip()

    body = [line([c.header for c in columns]), line(["-" * w for w in widths])] + [line(r) for r in cells]
    return "\n".join([title, "=" * len(title), *body, *[f"  {note}" for note in notes], ""])


def format_params(params: dict) -> str:
    """``name=value`` pairs for a table cell."""
    return " ".join(f"{name}={value}" for name, value in params.items()) or "-"


METHOD_COLUMNS = [
    Column("method", lambda r: r["method"]),
    Column("family", lambda r: r["family"]),
    Column("model", lambda r: r["model"]),
    Column("N", lambda r: r["images"]),
    Column("passes", lambda r: r["passes"]),
    Column("floor s", lambda r: r["floor_s"], "{:.4f}"),
    Column("raw s", lambda r: r["raw_s"], "{:.4f}"),
    Column("handler s", lambda r: r["handler_s"], "{:.4f}"),
    Column("explain-in-handler s", lambda r: r["in_handler_explain_s"], "{:.4f}"),
    Column("predict-in-handler s", lambda r: ratio(r["handler_timings"].get("predict_s"), r["images"]), "{:.4f}"),
    Column("handler/raw", lambda r: r["handler_over_raw"], "{:.2f}"),
    Column("in-handler/raw", lambda r: r.get("in_handler_over_raw"), "{:.2f}"),
    Column("raw/floor", lambda r: r["raw_over_floor"], "{:.1f}"),
    Column("handler/floor", lambda r: r.get("handler_over_floor"), "{:.1f}"),
    Column("traces (model)", lambda r: None if r.get("warm_traces") is None
           else f"{r['warm_traces']} ({r['warm_model_traces']})"),
    Column("params used", lambda r: format_params(r["params"]) + (f" bg={r['background']}" if r.get("background")
                                                                  else "")
           + (f"  FAILED {r['error']}" if r["error"] else "")),
]


BURST_COLUMNS = [
    Column("model", lambda r: r.get("model", "demo")),
    Column("method", lambda r: r["method"]),
    Column("mode", lambda r: r["mode"]),
    Column("batch", lambda r: r["batch_size"]),
    Column("calls", lambda r: r["invocations"]),
    Column("images", lambda r: r["images"]),
    Column("handler s", lambda r: r["handler_s"], "{:.2f}"),
    Column("img/s", lambda r: r["images_per_s"], "{:.1f}"),
    Column("speed-up", lambda r: r["speedup"], "{:.2f}x"),
    Column("wall s", lambda r: r["wall_s"], "{:.2f}"),
    Column("wall img/s", lambda r: r["wall_images_per_s"], "{:.1f}"),
    Column("fwd gain", lambda r: r.get("forward_gain"), "{:.2f}x"),
    Column("fwd+bwd gain", lambda r: r.get("forward_backward_gain"), "{:.2f}x"),
    Column("speed-up/fwd gain", lambda r: r.get("speedup_of_forward_gain"), "{:.0%}"),
    Column("params used", lambda r: format_params(r["params"]) + (f"  {r['failed']} FAILED: {r['error']}"
                                                                  if r["failed"] else "")),
]


BURST_NOTES = [
    "One message per invocation: the gradient function wired with BatchSize 1 (no batching window);",
    "  template BatchSize: wired as template.yaml says (BatchSize, MaximumBatchingWindowInSeconds).",
    "Images uploaded first (not timed), then drained from the queue by the local SQS event source",
    "  (devtools.local.lambda_service.SqsEventSource) calling the real gradient handler; each invocation size",
    "  warmed first.",
    "handler s: sum of handler invocations; wall s adds SQS receive/delete (and any batching-window wait).",
    "speed-up: handler time with one message per invocation / handler time with the template's BatchSize.",
    "fwd gain: the model's own batching gain in this run: seconds of BatchSize warm traced forward calls on one",
    "  image each / one call on BatchSize images (fwd+bwd gain: the same for the gradient of the top class, the",
    "  gradient methods' pass); speed-up/fwd gain: how much of it the handler's speed-up reaches. The handler",
    "  cannot reach all of it: per-image work does not batch (S3 GET and PUTs, decoding, PNG rendering, manifest,",
    "  gallery page), and the gain of the pass the method makes is what bounds its part (docs/benchmark.md).",
]


def shap_notes(rows: list[dict]) -> list[str]:
    """What the methods table says about the SHAP rows: backgrounds, and their cost on MobileNetV2."""
    shap_rows = [row for row in rows if row["family"] == SHAP]
    if not shap_rows:
        return []
    notes = ["bg=: the SHAP background the function uses: the model's background.npy (demo: 16 training images),",
             "  else the default, 5 flat grey images (MobileNetV2 has none)."]
    mobilenet = [row for row in shap_rows if row["model"] == "mobilenet" and row["raw_s"] is not None]
    if mobilenet:
        profiles = ", ".join(sorted({row["profile"] for row in mobilenet}))
        notes.append(f"SHAP on MobileNetV2 ({profiles} parameters): {min(r['raw_s'] for r in mobilenet):.1f}-"
                     f"{max(r['raw_s'] for r in mobilenet):.1f} s per image raw, so it stays in the quick profile.")
    return notes


def method_notes(forwards: dict, repeats: int, batch_sizes: dict, rows: list[dict]) -> list[str]:
    """Footnotes of the methods table: what each column measures."""
    measured = "; ".join(
        f"{key}: forward {f['s_per_image'] * 1e3:.2f} ms/image (graph call {f['graph_s'] * 1e3:.2f}, "
        f"predict {f['predict_s'] * 1e3:.2f}), forward+backward {f['backward_s_per_image'] * 1e3:.2f} ms/image "
        f"({f['backward_over_forward']:.1f}x)" for key, f in forwards.items() if "backward_s_per_image" in f
    )
    return [
        "All times are seconds per image: the batch of N images is processed at once, its time divided by N.",
        "raw s: Xplique explainer.explain() on the preprocessed batch (+ conversion to numpy), explainer built as",
        "  the session builds it (same batch size), already built and warmed once on this batch: tracing excluded.",
        "  shap family: the explain_core.shap_methods explainer that build_explainer gives the session, with the",
        "  model's background (bg=); its first call in a process also compiles shap's numba code (excluded here,",
        "  see partition-profile). The shap library's own calls are compared in shap-vs-xplique and tabular.",
        "handler s: the real handler on one SQS event with N records (uploads with metadata methods=<method>, params=",
        "  <overrides>), warm (second upload after a warm-up invocation); includes S3 I/O on the in-process moto",
        "  emulator: model HEADs, image GET, decode, predict, explain, overlay PNGs and .npy, PUTs, manifest.",
        "  The template's BatchSize (" + ", ".join(f"{family} {size}" for family, size in batch_sizes.items())
        + ") caps what Lambda delivers in one invocation:",
        "  N above it makes a larger event than Lambda would send.",
        "explain-in-handler s, predict-in-handler s: what the handler itself measured (manifest methods[].seconds",
        "  and timings.predict_s, / N); the JSON has the rest of the manifest's timings (model_s, download_s, ...).",
        "floor s: passes per image (MethodSpec.passes) x the measured time of one pass per image, batched and warm",
        f"  ({FORWARD_BATCH} images): forward AND backward (a traced tf.function with a GradientTape: the gradient of",
        "  one class's score with respect to the inputs) for the methods the registry marks backward (gradient",
        "  family, GradientExplainer, DeepExplainer), the forward time (best of graph call and model.predict) for",
        f"  the others (perturbation, FEM, Partition, SuperpixelKernel) -- {measured}.",
        "  DeepExplainer's passes are its background references, run as one doubled batch.",
        "raw/floor, handler/floor: how far the library call and the handler are from the model's own cost.",
        "in-handler/raw: explain-in-handler s / raw s, the explainer inside the handler against the raw call.",
        "traces (model): TensorFlow graphs traced during a timed handler call (the most of the timed runs), in",
        "  brackets those of a model's forward or gradient graph (seconds each on MobileNetV2; the rest are",
        "  Xplique's small helpers, milliseconds). The handler is warmed with N+1 images, timed with N: a warm",
        "  function meets new numbers of images and must not trace its model again.",
        f"Best of {repeats} timed run(s) per raw and handler cell; on a shared machine differences under ~20%"
        " are noise.",
        *shap_notes(rows),
    ]


def best_note(repeats: int) -> str:
    return f"best of {repeats} run(s), quick ones repeated until 1 s was timed (at most {max(repeats, 5)} runs)"


SHAP_VS_XPLIQUE_COLUMNS = [
    Column("N", lambda r: r["evaluations"]),
    Column("method", lambda r: r["method"]),
    Column("library", lambda r: r["library"]),
    Column("rows/img", lambda r: r.get("model_rows_per_image"), "{:.0f}"),
    Column("calls/img", lambda r: r.get("model_calls_per_image"), "{:.1f}"),
    Column("s/image", lambda r: r["s_per_image"], "{:.4f}"),
    Column("vs ref", lambda r: r.get("vs_reference"), "{:.2f}"),
    Column("floor s", lambda r: r["floor_s"], "{:.4f}"),
    Column("s/floor", lambda r: r.get("over_floor"), "{:.1f}"),
    Column("reference", lambda r: r["reference"] + (f"  FAILED {r['error']}" if r["error"] else "")),
]


def shap_vs_xplique_notes(rows: list[dict], repeats: int) -> list[str]:
    forward = rows[0]["forward_s_per_image"] if rows else 0.0
    return [
        "Demo CNN, the same images for every row, each explaining its predicted class; N = model evaluations per",
        "  image (KernelShap/SuperpixelKernel nb_samples=N, PartitionExplainer max_evals=N).",
        f"s/image: warm (a first run traces and compiles), {best_note(repeats)}.",
        f"floor s: N x {forward * 1e3:.2f} ms, the batched forward time per image. rows/img, calls/img: model rows",
        "  and calls actually made (counted; '-' where Xplique calls the model itself; a call is one model.predict",
        "  or one tf.function call). vs ref: s/image over the reference row's.",
        "xplique KernelShap: the registry's Xplique method (8x8 grid cells, LinearRegression surrogate).",
        "ours: explain_core.shap_methods via build_explainer, as the shap function runs them (batch size of the",
        "  session, one class, the model's background.npy). SuperpixelKernel: registry defaults (SLIC segments,",
        "  fill) with nb_samples=N.",
        "shap Kernel, docs way: shap's image Kernel SHAP example: a per-segment masking loop, f = model.predict of",
        "  every class, mean-colour fill, default l1_reg='num_features(10)'. fast: vectorised masks, the registry's",
        "  fill, traced tf.function, one class, l1_reg=False (what ours does).",
        "shap Partition: shap.Explainer(f, shap.maskers.Image('blur(16,16)', shape), algorithm='partition'),",
        "  outputs=top class; naive: f = model.predict, batch_size='auto' (10 masks per call); fast: f = a traced",
        "  tf.function, batch_size = the session's.",
    ]


TABULAR_COLUMNS = [
    Column("model", lambda r: r["model"]),
    Column("method", lambda r: r["method"]),
    Column("rows", lambda r: r["rows"]),
    Column("raw s", lambda r: r.get("raw_s"), "{:.4f}"),
    Column("ours s", lambda r: r.get("ours_s"), "{:.4f}"),
    Column("ours/raw", lambda r: r.get("ours_over_raw"), "{:.2f}"),
    Column(f"ours s b{TABULAR_WIDE_BATCH}", lambda r: r.get("ours_wide_s"), "{:.4f}"),
    Column("report s", lambda r: r.get("report_s"), "{:.3f}"),
    Column("plots", lambda r: r.get("plots")),
    Column("handler s", lambda r: r.get("handler_s"), "{:.3f}"),
    Column("handler rest s", lambda r: r.get("handler_other_s"), "{:.3f}"),
    Column("additivity", lambda r: r.get("additivity"), "{:.1e}"),
    Column("params used", lambda r: format_params(r["params"]) + (f"  FAILED {r['error']}" if r["error"] else "")),
]


def tabular_notes(repeats: int) -> list[str]:
    return [
        "Seconds for the whole upload (all its rows); rows: held-out breast cancer rows, explained class",
        "  malignant (the cards' explained_classes); background: the published background.npy (32 training rows).",
        f"Warm, {best_note(repeats)}; report and handler: best of at least 2.",
        "raw s: the shap call a user writes, on the whole model: shap.TreeExplainer(booster).shap_values(X)",
        "  (explainer built in the timed call); KernelExplainer(model.predict, background).shap_values(X, nsamples,",
        "  l1_reg=False); DeepExplainer(model, background[:nb_background]); GradientExplainer(model, background)",
        "  .shap_values(X, nsamples). Keras models have 2 outputs, so raw Deep/Gradient explain both classes.",
        "ours s: explain_core.shap_methods via build_explainer (cached explainer, one class, the session's batch",
        f"  size); ours s b{TABULAR_WIDE_BATCH}: the same with batch_size={TABULAR_WIDE_BATCH} (Keras models only).",
        "report s: explain_core.tabular_report.report_files: values.csv + bar, beeswarm and 3 waterfall PNGs",
        "  (plots column). handler s: the real shap handler on one SQS event for a CSV upload of the same rows",
        "  (warm), with S3 I/O on the emulator; handler rest s = handler - ours - report (parsing, predict, summary",
        "  JSON, PUTs, manifest). additivity: max |sum(values) + base - output| of ours.",
    ]


TEXT_COLUMNS = [
    Column("method", lambda r: r["method"]),
    Column("family", lambda r: r["family"]),
    Column("passes", lambda r: r["passes"]),
    Column("floor s/doc", lambda r: r["floor_s"], "{:.4f}"),
    Column("raw s/doc", lambda r: r.get("raw_s"), "{:.4f}"),
    Column("ours s/doc", lambda r: r.get("ours_s"), "{:.4f}"),
    Column("handler s/doc", lambda r: r.get("handler_s"), "{:.4f}"),
    Column("explain-in-handler s/doc", lambda r: r.get("in_handler_explain_s"), "{:.4f}"),
    Column("ours/raw", lambda r: r.get("ours_over_raw"), "{:.2f}"),
    Column("handler/ours", lambda r: r.get("handler_over_ours"), "{:.2f}"),
    Column("handler/floor", lambda r: r.get("handler_over_floor"), "{:.1f}"),
    Column("params used", lambda r: format_params(r["params"]) + (f"  FAILED {r['error']}" if r["error"] else "")),
]


def text_notes(rows: list[dict], repeats: int) -> list[str]:
    forward = next((r["pass_s"] for r in rows if r["family"] != GRADIENT), None)
    backward = next((r["pass_s"] for r in rows if r["family"] == GRADIENT), None)
    passes = " and ".join(f"{label} {seconds * 1e3:.3f} ms/doc" for label, seconds in
                          (("forward", forward), ("forward+backward", backward)) if seconds is not None)
    return [
        "Seconds per document: each cell's time for all N held-out reviews (text_demo.test_reviews) divided by N;",
        "  every measurement explains each review's predicted class (the demo card's top_k=1).",
        "floor: passes (MethodSpec.passes at the card's max_length) x one measured pass, batched and warm",
        f"  ({FORWARD_BATCH} documents): {passes}.",
        "  Gradient methods: forward+backward on the embeddings model (tf.GradientTape); others: forward on ids.",
        *[line for r in rows if r.get("model_rows_per_document") is not None for line in (
            f"  {r['method']}: max_evals is a bound; ours evaluated {r['model_rows_per_document']:.0f} model rows",
            "    per document (counted): a short document's partition tree runs out first.")],
        "raw: the library call a user would write: Xplique's class on our embeddings model, one document per call",
        "  (its padding mask is per document); Occlusion(patch_size=1) and Lime (default mapping: a feature per",
        "  position) on the ids model, one call for the N documents; shap.PartitionExplainer(f, shap.maskers.Text())",
        "  with shap's default tokenizer, f = our tokenizer + model.predict, shap's default batch (10), every class.",
        "ours: modality_for(card).build_explainer(...) then explain_document per document, explainer built and",
        f"  warmed before timing. raw and ours: warm, {best_note(repeats)}.",
        "handler: the real handler of the method's family on a .jsonl upload of the N reviews, warm (a first",
        "  upload warms it), best of at least 2; includes S3 I/O on the emulator, parsing, predict, the tokens",
        "  JSON, values CSV, HTML and PNG per document and the manifest. explain-in-handler: the manifest's",
        "  methods[].seconds / N (the explain_document loop inside the handler).",
    ]


INSIGHTS_COLUMNS = [
    Column("kind", lambda r: "all, in turn" if r["kind"] == "all" else r["kind"]),
    Column("model", lambda r: r["model"]),
    Column("parts", lambda r: f"{r['run']}/{r['planned']}" if "run" in r else None),
    Column("pass ms", lambda r: r.get("seconds_per_pass") and r["seconds_per_pass"] * 1e3, "{:.1f}"),
    Column("estimated s", lambda r: r.get("estimated_s"), "{:.1f}"),
    Column("measured s", lambda r: r.get("measured_s"), "{:.1f}"),
    Column("ratio", lambda r: r.get("ratio"), "{:.2f}"),
    Column("longest part s", lambda r: r.get("longest_part_s"), "{:.1f}"),
    Column("assembly s", lambda r: r.get("assembly_s"), "{:.2f}"),
    Column("peak RSS MB", lambda r: r["peak_rss_mb"], "{:.0f}"),
    Column("over baseline MB", lambda r: r["over_baseline_mb"], "{:+.0f}"),
    Column("error", lambda r: f"FAILED {r['error']}" if r["error"] else ""),
]


def insights_notes(insights: dict) -> list[str]:
    """What the insights table measures, the baselines and the recommended MemorySize."""
    settings = insights["settings"]
    baselines = "; ".join(f"{model} {b['peak_rss_mb'] or 0:.0f} MB" for model, b in insights["baselines"].items())
    notes = [
        f"The demo job's {'small' if settings['small'] else 'full'} settings (devtools.insights_demo.spec) on each "
        "model, MobileNetV2 with its class names and",
        "  out_relu for last_conv; image sets: the demo's generated images, resized to the model's input.",
        "One fresh subprocess per (kind, model): load the model, jobs.measure_pass_seconds (pass ms: one image's",
        "  forward+backward), kind.plan (PlanContext, max_part_seconds 540), run_part on each part through a local",
        "  PartContext (devtools.concept_images.local_context: in-memory images, a dict as the bucket), assemble.",
        "parts: run/planned" + (f" (at most {settings['max_parts']} per kind, the largest estimates)"
                                if settings["max_parts"] else "")
        + "; estimated s: the plan's estimates of the parts run;",
        "  measured s: their run_part times (the first part of a process also traces); ratio = measured / estimated",
        "  (below 1: the plan is conservative); longest part s: the longest run_part.",
        *(["all, in turn: every kind in one process, one part each (the largest estimate), as a warm execution",
           "  environment runs parts of different kinds one after the other."] if settings.get("sequence") else []),
        "peak RSS: the subprocess's VmHWM at its end (parts and assembly included; its ru_maxrss would include the",
        "  benchmark process's RSS at the fork); over baseline: minus the VmHWM of a subprocess that only imports",
        f"  TensorFlow and loads the model ({baselines}).",
    ]
    advice = insights.get("recommendation")
    if advice:
        longest, scaled = advice["longest_part_s"], advice["longest_part_at_memory_s"]
        notes += [
            f"Recommended MemorySize: {advice['memory_mb']} MB = the largest peak, {advice['largest_peak_mb']:.0f} MB "
            f"({advice['largest_peak']}), x {advice['margin']} rounded up to 64 MB"
            + (" (capped: Lambda's maximum is below that)." if advice.get("capped") else "."),
            f"  At {advice['memory_mb']} MB Lambda gives {advice['vcpus']:.2f} vCPU; the longest part "
            f"({advice['longest_part']}, {longest:.0f} s on {advice['measured_cpus']} cores) would take",
            f"  about {scaled:.0f} s scaled to that ({advice['share_of_timeout']:.0%} of the {advice['timeout_s']} s "
            "timeout).",
        ]
    return notes


PROFILE_COLD_NOTES = [
    "A fresh Python process (as a cold Lambda start) on the same 4 images: shap's numba functions",
    "  (_jit_build_partition_tree, make_masks' _init_masks/_rec_fill_masks, _build_fixed_multi_output) are",
    "  compiled on first use, per process: shap does not cache them on disk (no cache=True).",
]


def profile_tables(profile: dict, repeats: int) -> list[str]:
    """The three tables of the partition-profile section."""
    images, evals = profile["images"], profile["evaluations"]
    tables = []
    cold = profile.get("cold") or {}
    if cold or profile.get("cold_error"):
        steps = [{"step": step, "s": seconds} for step, seconds in cold.items()]
        notes = PROFILE_COLD_NOTES + ([f"FAILED: {profile['cold_error']}"] if profile.get("cold_error") else [])
        tables.append(format_table(f"Partition explainer, cold: first use in a new process ({images} images, "
                                   f"max_evals={evals})", [Column("step", lambda r: r["step"]),
                                                           Column("seconds", lambda r: r["s"], "{:.3f}")],
                                   steps, notes))
    warm = profile["warm"]
    pieces = sorted(warm["pieces"].items(), key=lambda item: -item[1])
    rows = [{"piece": piece, "s": seconds, "share": seconds / warm["total_s"], "calls": warm["calls"].get(piece)}
            for piece, seconds in pieces]
    sizes = warm["sizes"]
    per_image = len(sizes) // images if images else 0
    tables.append(format_table(
        f"Partition explainer, warm: where {warm['total_s']:.3f} s go ({images} images, max_evals={evals}, "
        f"classes {profile['classes']})",
        [Column("piece (exclusive time)", lambda r: r["piece"]), Column("seconds", lambda r: r["s"], "{:.3f}"),
         Column("share", lambda r: r["share"], "{:.0%}"), Column("calls", lambda r: r["calls"])],
        rows,
        [f"Model calls: {len(sizes)} for {sum(sizes)} rows; batch sizes of the first image: "
         f"{', '.join(map(str, sizes[:per_image]))} (owen's queue widens 1, 2, 8, 32, ... up to batch_size).",
         "One PartitionExplainer.explain() as the session runs it (warm); each piece timed exclusive of the others."],
    ))
    tables.append(format_table(
        f"Partition explainer variants ({images} images, max_evals={evals}, warm)",
        [Column("variant", lambda r: r["variant"]), Column("batch", lambda r: r["batch_size"]),
         Column("calls", lambda r: r["calls"]), Column("rows", lambda r: r["rows"]),
         Column("forward s", lambda r: r["forward_s"], "{:.3f}"), Column("total s", lambda r: r["seconds"], "{:.3f}"),
         Column("s/image", lambda r: r["s_per_image"], "{:.4f}"), Column("vs ours", lambda r: r["vs_ours"], "{:.2f}"),
         Column("max |diff|", lambda r: r["max_abs_diff"], "{:.1e}")],
        profile["variants"],
        [f"Each row: {best_note(repeats)}.",
         "ours: explain_core PartitionExplainer (traced tf.function, the session's batch_size, one class per group,",
         "  explainer kept per image shape, model-space blur). raw shap: the top class, model-space blur, f as",
         "  named;",
         "  batch 'auto' is shap's default (10). max |diff|: largest attribution difference from ours' first row.",
         "forward s: time inside the model function (includes model.predict's per-call tf.data set-up)."],
    ))
    return tables


def tables_of(results: dict, args) -> list[str]:
    """The plain-text tables of whatever ``results`` holds."""
    tables = []
    if results["methods"]:
        tables.append(format_table(
            f"Explanation methods (N={args.images} images per batch)", METHOD_COLUMNS, results["methods"],
            method_notes(results["forward"], args.repeats, results["environment"]["template_batch_sizes"],
                         results["methods"]),
        ))
    if results["burst"]:
        tables.append(format_table(
            f"Burst: {args.burst_images} images per model through the gradient function", BURST_COLUMNS,
            results["burst"], BURST_NOTES,
        ))
    if results["shap_vs_xplique"]:
        tables.append(format_table(
            f"SHAP vs Xplique on the demo CNN ({args.images} images, same N evaluations per image)",
            SHAP_VS_XPLIQUE_COLUMNS, results["shap_vs_xplique"],
            shap_vs_xplique_notes(results["shap_vs_xplique"], args.repeats),
        ))
    if results["tabular"]:
        tables.append(format_table("Tabular SHAP (breast cancer demo models)", TABULAR_COLUMNS, results["tabular"],
                                   tabular_notes(args.repeats)))
    if results["partition_profile"]:
        tables += profile_tables(results["partition_profile"], args.repeats)
    if results.get("text"):
        tables.append(format_table(f"Text methods on the demo LSTM ({args.text_documents} reviews per upload)",
                                   TEXT_COLUMNS, results["text"], text_notes(results["text"], args.repeats)))
    if results.get("insights", {}).get("rows"):
        tables.append(format_table("Insight kinds: time per part and peak memory", INSIGHTS_COLUMNS,
                                   results["insights"]["rows"], insights_notes(results["insights"])))
    return tables
