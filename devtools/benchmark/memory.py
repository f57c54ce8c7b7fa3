"""Section ``memory``: peak RSS of every image method at 224x224 and at 1024x1024, against the estimate that
``explain_core.memory`` refuses or shrinks batches with, and before/after where the bounding changes the peak.

Models: MobileNetV2 with random weights (no download) at 224x224 (alpha 1.0, the ``mobilenet`` subject) and
at 1024x1024 (alpha 0.35: the largest input a card allows; the full width would need 8x the activations),
and a plain VGG-style CNN (``vgg``, random weights, 224 px: an architecture the backward coefficient was not
first fitted on), built once under ``.cache/benchmark/``. Each (method, size, variant) runs in a fresh subprocess
(``python -m devtools.benchmark.memory``) that loads the model as the model store does, predicts once, reads
its peak RSS (VmHWM: the model-loaded baseline), builds the explainer as the handler does
(``attribution.ExplainerCache.get``) and explains one image for one class; the row's figure is the peak RSS
over that baseline.

Variants: ``after`` runs at the batch ``memory.fitting_batch_size`` picks for the handler's rows per model
call at that input size (``session.rows_per_call``) in a function of ``--memory-limit-mb`` (the template's
MemorySize), with the memory-bounded classes (``explain_core.bounded_explainers``); a method that cannot fit
is reported as refused (over_memory_budget) with its estimate. ``before`` (where the batch or the class
differs) runs Xplique's own class at the session's batch, unless its estimate is over ``--memory-before-max-
mb`` (the machine is shared: then only the estimate is shown).

Sample counts are reduced (peak memory depends on the batch, not on the total count, once batching is
bounded): each method runs two batches of model passes (at least one full batch), except the fixed parts
that grow with a count (SHAP's GradientExplainer and SuperpixelKernelExplainer copy the input once per sample,
Deep SHAP's references are not batched), whose counts are named in the table.
"""

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

from devtools.benchmark.children import peak_rss_mb, run_child
from devtools.benchmark.report import Column, format_params, format_table
from devtools.benchmark.subjects import CACHE, MOBILENET_CLASSES, mobilenet_card

SECTION = "memory"
CHILD = "devtools.benchmark.memory"
#: (input side, MobileNetV2 width multiplier) of the two models.
SIZES = {224: 1.0, 1024: 0.35}
#: The architectures: MobileNetV2 at every size, and a plain VGG-style CNN (no batch norm, Conv2D with a fused
#: ReLU: each layer keeps its output for the backward pass) at 224 px only, so the estimate is checked on more
#: than the architecture its coefficients were first fitted on.
ARCHITECTURES = {"mobilenetv2": tuple(SIZES), "vgg": (224,)}
#: (filters, convolutions) of the VGG-style model's blocks: VGG16's first three blocks at half width.
VGG_BLOCKS = ((32, 2), (64, 2), (128, 2))
#: An estimate/measured below this is flagged UNDER-ESTIMATE: too little margin to trust against an OOM kill.
UNDER_ESTIMATE_RATIO = 1.1
#: MemorySize recommended: the largest measured peak (baseline + method, MobileNetV2, 'after'), times this.
MEMORY_MARGIN = 1.25
MEMORY_STEP_MB = 64
#: Lambda's memory range.
LAMBDA_MIN_MB, LAMBDA_MAX_MB = 128, 10240
#: Methods whose Xplique class build_explainer replaces with a bounded one (explain_core.bounded_explainers):
#: their ``before`` variant runs Xplique's class.
ORIGINAL_CLASSES = ("IntegratedGradients", "Occlusion")


# ---------------------------------------------------------------------------------------- the models
def model_directory(size: int, architecture: str = "mobilenetv2") -> Path:
    """A MobileNetV2 (random weights, 1000 classes, logits) at ``size`` x ``size`` with its card, or the VGG-style
    model (:func:`vgg_model`); built once."""
    import keras

    if architecture == "vgg":
        return vgg_directory(size)
    alpha = SIZES[size]
    directory = CACHE / f"memory-mobilenetv2-{size}-{alpha}-keras-{keras.__version__}"
    if not (directory / "model.keras").exists():
        directory.mkdir(parents=True, exist_ok=True)
        keras.utils.set_random_seed(0)
        model = keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3), alpha=alpha,
                                               classes=MOBILENET_CLASSES, classifier_activation=None)
        model.save(directory / "partial.keras")
        (directory / "partial.keras").replace(directory / "model.keras")
    card = {**mobilenet_card(), "name": f"mobilenetv2-{size}", "input_height": size, "input_width": size}
    (directory / "card.json").write_text(json.dumps(card, indent=2))
    return directory


def vgg_model(size: int):
    """VGG-style: ``VGG_BLOCKS`` of 3x3 Conv2D with ReLU and a 2x2 max pool, global average pool, 1000 logits;
    random weights, layers named explicitly."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3), name="pixels")
    hidden = inputs
    for block, (filters, convolutions) in enumerate(VGG_BLOCKS, start=1):
        for conv in range(1, convolutions + 1):
            hidden = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                         name=f"block{block}_conv{conv}")(hidden)
        hidden = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(hidden)
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(hidden)
    logits = keras.layers.Dense(MOBILENET_CLASSES, name="logits")(pooled)
    return keras.Model(inputs, logits, name=f"vgg-style-{size}")


def vgg_directory(size: int) -> Path:
    """:func:`vgg_model` saved with its card (MobileNetV2's preprocessing, Grad-CAM on the last convolution)."""
    import keras

    directory = CACHE / f"memory-vgg-{size}-{len(VGG_BLOCKS)}blocks-keras-{keras.__version__}"
    if not (directory / "model.keras").exists():
        directory.mkdir(parents=True, exist_ok=True)
        vgg_model(size).save(directory / "partial.keras")
        (directory / "partial.keras").replace(directory / "model.keras")
    last = f"block{len(VGG_BLOCKS)}_conv{VGG_BLOCKS[-1][1]}"
    card = {**mobilenet_card(), "name": f"vgg-style-{size}", "input_height": size, "input_width": size,
            "description": "VGG-style CNN with random weights: memory benchmark only.", "cam_layer": last}
    (directory / "card.json").write_text(json.dumps(card, indent=2))
    return directory


def reduced_params(spec, batch: int, size: int) -> dict:
    """Registry defaults with counts cut to two batches of model passes (``spec.resolve`` checks them)."""
    name, twice = spec.name, max(2 * batch, 2)
    # IntegratedGradients keeps the registry's 50 steps: more than a batch at 1024 px, where Xplique's path shows.
    counts = {"IntegratedGradients": {"steps": max(50, twice)},
              "Rise": {"nb_samples": max(16, twice)}, "Lime": {"nb_samples": max(16, twice)},
              "KernelShap": {"nb_samples": max(16, twice)}, "HsicAttributionMethod": {"nb_design": max(16, twice)},
              "SobolAttributionMethod": {"nb_design": 8, "grid_size": 4},
              "Occlusion": {"patch_size": size // 8, "patch_stride": size // 16},
              "GradientExplainer": {"nb_samples": max(8, twice)}, "DeepExplainer": {"nb_background": 4},
              "PartitionExplainer": {"max_evals": max(50, twice)},
              "SuperpixelKernelExplainer": {"nb_samples": max(16, twice)}}
    for statistic in ("SmoothGrad", "VarGrad", "SquareGrad"):
        counts[statistic] = {"nb_samples": twice}
    return spec.resolve(counts.get(name, {}), (size, size))


# ---------------------------------------------------------------------------------------- in the subprocess
def measure(size: int, method: str, variant: str, limit_mb: int, session_batch: int, before_max_mb: float,
            architecture: str = "mobilenetv2") -> dict:
    """Load the model, then explain one image with ``method`` (``variant`` after/before); peaks in MB."""
    import numpy as np

    from devtools.benchmark.subjects import Subject
    from explain_core import memory
    from explain_core.attribution import ExplainerCache, raw_outputs, run_method, to_model_input
    from explain_core.errors import OverMemoryBudgetError
    from explain_core.registry import REGISTRY
    from explain_core.settings import Settings

    directory = model_directory(size, architecture)
    subject = Subject(f"memory{size}", f"{architecture}-{size}", "v1", directory, size, "quick")
    card, model = subject.card, subject.model()
    spec = REGISTRY[method]
    inputs = to_model_input(subject.images(1), card)
    raw_outputs(model, inputs, card, 1)
    baseline = peak_rss_mb()
    settings = Settings(input_bucket="", results_bucket="", model_bucket="", memory_limit_mb=limit_mb)
    in_use = memory.process_memory_mb()
    model_mem = memory.MODEL_MEMORY.get(model, (size, size, 3))
    result = {"method": method, "family": spec.family, "model": architecture, "size": size,
              "alpha": SIZES[size] if architecture == "mobilenetv2" else None, "variant": variant,
              "baseline_mb": baseline, "in_use_mb": in_use, "limit_mb": limit_mb,
              "activation_mb": model_mem.activation_bytes / memory.MB}
    # The batch the function would use, from the parameters the handler would run (the reduced ones).
    params = reduced_params(spec, session_batch, size)
    result["session_estimate_mb"] = memory.method_memory(spec, params, 1, model_mem, (size, size)).peak(
        session_batch) / memory.MB
    try:
        fitted = memory.fitting_batch_size(spec, params, 1, model, card, session_batch, settings, in_use)
    except OverMemoryBudgetError as exc:
        fitted, result["refused"] = None, exc.details
    if variant == "after":
        batch = fitted
    elif method in ORIGINAL_CLASSES:  # Xplique's class at the same batch: what the bounded class changes
        batch = fitted or 1
    else:  # the session's batch: what fitting the batch changes
        batch = session_batch
    if batch is None:  # refused: its estimate at one row is the figure
        result.update(batch=None, params=params, estimate_mb=result["refused"]["estimated_mb"])
        return result
    params = reduced_params(spec, batch, size)
    estimate = memory.method_memory(spec, params, 1, model_mem, (size, size)).peak(batch) / memory.MB
    original = variant == "before" and method in ORIGINAL_CLASSES
    if original:  # what Xplique materialises at once beside the batch
        whole = params["steps"] * 3 * model_mem.input_bytes if method == "IntegratedGradients" else \
            2 * spec.passes(params, (size, size)) * size * size  # Occlusion: every bool mask, twice
        estimate += whole / memory.MB
    result.update(batch=batch, params=params, estimate_mb=estimate)
    if variant == "before" and estimate > before_max_mb:
        result["skipped"] = f"estimate {estimate:.0f} MB over --memory-before-max-mb {before_max_mb:.0f}"
        return result
    one_hot = np.zeros((1, MOBILENET_CLASSES), dtype=np.float32)
    one_hot[0, 7] = 1.0
    if original:  # Xplique's own class, not build_explainer's bounded one
        explainer = spec.explainer_class()(model, batch_size=batch, **params)
    else:
        # As the handler builds it (ExplainerCache.get: the bounded classes, the shared model functions, no XLA).
        explainer = ExplainerCache().get(spec, model, card, params, batch, subject.background())
    started = time.perf_counter()
    run_method(explainer, inputs, one_hot)
    result.update(seconds=time.perf_counter() - started, peak_mb=peak_rss_mb())
    result["over_baseline_mb"] = result["peak_mb"] - baseline
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {CHILD}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, choices=list(SIZES), required=True)
    parser.add_argument("--model", choices=list(ARCHITECTURES), default="mobilenetv2")
    parser.add_argument("--method", required=True)
    parser.add_argument("--variant", choices=("after", "before"), required=True)
    parser.add_argument("--limit-mb", type=int, required=True)
    parser.add_argument("--session-batch", type=int, required=True)
    parser.add_argument("--before-max-mb", type=float, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):  # Keras and shap print; the result is the file
        result = measure(args.size, args.method, args.variant, args.limit_mb, args.session_batch,
                         args.before_max_mb, args.model)
    args.output.write_text(json.dumps(result, indent=2))


# ---------------------------------------------------------------------------------------- in the benchmark
def add_arguments(parser) -> None:
    parser.add_argument("--memory-sizes", type=lambda s: [int(v) for v in s.split(",")], default=list(SIZES),
                        help="memory section: model input sides (224,1024)")
    parser.add_argument("--memory-models", type=lambda s: s.split(","), default=list(ARCHITECTURES),
                        help="memory section: architectures (mobilenetv2 at every size, vgg at 224 px only)")
    parser.add_argument("--memory-methods", type=lambda s: s.split(","), default=None,
                        help="memory section: image methods (default: every image method of the registry)")
    parser.add_argument("--memory-limit-mb", type=int, default=0,
                        help="memory section: the function memory the batch is fitted to (default 0: the "
                             "template's MemorySize of the method's family function)")
    parser.add_argument("--memory-before-max-mb", type=float, default=6000,
                        help="memory section: 'before' runs whose estimate is larger are not run (shared machine)")
    parser.add_argument("--memory-parallel", type=int, default=2,
                        help="memory section: children run at once (peaks are per child; default 2, the cores)")
    parser.add_argument("--memory-timeout", type=float, default=900, help="memory section: seconds per child")


def image_methods(names=None) -> list:
    from explain_core.registry import METHODS

    methods = [spec for spec in METHODS if "image" in spec.modalities]
    return [spec for spec in methods if names is None or spec.name in names]


def run(harness, args, results) -> dict:
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from explain_core.session import DEFAULT_BATCH_SIZE, rows_per_call

    def measured(architecture: str, size: int, spec) -> list[dict]:
        limit = args.memory_limit_mb or harness.deployment.function_for_family(spec.family).memory
        # The rows per model call the handler uses for a model of this input size (session.rows_per_call).
        session_batch = rows_per_call(DEFAULT_BATCH_SIZE, SimpleNamespace(modality="image", input_height=size,
                                                                          input_width=size))
        common = ["--model", architecture, "--size", str(size), "--method", spec.name, "--limit-mb", str(limit),
                  "--session-batch", str(session_batch), "--before-max-mb", str(args.memory_before_max_mb)]
        after = child_row(harness, [*common, "--variant", "after"], args.memory_timeout)
        if after.get("batch") != session_batch or spec.name in ORIGINAL_CLASSES:
            return [after, child_row(harness, [*common, "--variant", "before"], args.memory_timeout)]
        return [after]

    runs = [(architecture, size) for architecture in args.memory_models for size in args.memory_sizes
            if size in ARCHITECTURES[architecture]]
    for architecture, size in runs:
        model_directory(size, architecture)  # built once, before any child needs it
    # Peak RSS is each child's own (VmHWM), so children may run side by side: only their seconds suffer.
    with ThreadPoolExecutor(max_workers=args.memory_parallel) as pool:
        futures = [pool.submit(measured, architecture, size, spec)
                   for architecture, size in runs for spec in image_methods(args.memory_methods)]
        rows = [row for future in futures for row in future.result()]
    return {"rows": rows, "limit_mb": args.memory_limit_mb, "recommendation": recommendation(rows)}


def child_row(harness, arguments: list[str], timeout: float) -> dict:
    result, _, wall, error = run_child(CHILD, arguments, harness.log, timeout)
    row = {**(result or {}), "wall_s": wall, "error": error or (None if result else "no result")}
    if not result:
        row.update(model=arguments[1], method=arguments[5], size=int(arguments[3]), variant=arguments[-1])
    figure = (f"{row['over_baseline_mb']:.0f} MB over {row['baseline_mb']:.0f} MB, batch {row['batch']}"
              if row.get("over_baseline_mb") is not None else row.get("skipped") or
              (f"refused: {row['refused']}" if row.get("refused") else f"FAILED {row['error']}"))
    print(f"[memory] {row['model']} {row['method']} {row['size']}px {row['variant']}: {figure} ({wall:.0f} s)",
          flush=True)
    return row


def recommendation(rows: list[dict]) -> dict | None:
    """MemorySize per family: the largest measured peak (model-loaded baseline + peak over it, at the batch the
    handler runs) of its methods on MobileNetV2, at either size, times MEMORY_MARGIN, rounded up to
    MEMORY_STEP_MB. Measured, not estimated: the estimate is a deliberately pessimistic bound that shrinks a
    batch or refuses before an out-of-memory kill (the estimate/measured column). The VGG-style model checks
    the estimate, it does not size the template."""
    by_family: dict[str, dict] = {}
    for row in rows:
        if (row.get("variant") != "after" or row.get("over_baseline_mb") is None
                or row.get("model", "mobilenetv2") != "mobilenetv2"):
            continue
        needed = row["baseline_mb"] + row["over_baseline_mb"]
        if row["family"] not in by_family or needed > by_family[row["family"]]["needed_mb"]:
            by_family[row["family"]] = {"needed_mb": needed, "method": row["method"], "size": row["size"],
                                        "limit_mb": row.get("limit_mb"), "margin": MEMORY_MARGIN,
                                        "memory_mb": min(LAMBDA_MAX_MB, max(LAMBDA_MIN_MB, math.ceil(
                                            needed * MEMORY_MARGIN / MEMORY_STEP_MB) * MEMORY_STEP_MB))}
    return by_family or None


def tables(section: dict, args) -> list[str]:
    def ratio(row):
        return (row["estimate_mb"] / row["over_baseline_mb"]
                if row.get("over_baseline_mb") and row.get("estimate_mb") else None)

    def figure(row):
        if row.get("over_baseline_mb") is not None:
            return row["over_baseline_mb"]
        return None

    def status(row):
        if row.get("refused") and row.get("batch") is None:
            return f"refused over_memory_budget ({row['refused']['available_mb']} MB left)"
        if (ratio(row) or UNDER_ESTIMATE_RATIO) < UNDER_ESTIMATE_RATIO:
            return f"UNDER-ESTIMATE (estimate/measured below {UNDER_ESTIMATE_RATIO})"
        return row.get("skipped") or row.get("error") or ""

    columns = [
        Column("model", lambda r: r.get("model", "mobilenetv2")),
        Column("method", lambda r: r["method"]),
        Column("size", lambda r: r["size"], "{}"),
        Column("variant", lambda r: r["variant"]),
        Column("batch", lambda r: r.get("batch"), "{}"),
        Column("peak over baseline MB", figure, "{:.0f}"),
        Column("estimate MB", lambda r: r.get("estimate_mb"), "{:.0f}"),
        Column("estimate/measured", ratio, "{:.2f}"),
        Column("baseline MB", lambda r: r.get("baseline_mb"), "{:.0f}"),
        Column("limit MB", lambda r: r.get("limit_mb"), "{}"),
        Column("s", lambda r: r.get("seconds"), "{:.1f}"),
        Column("params (reduced counts) / status", lambda r: " ".join(
            part for part in (format_params(r.get("params") or {}), status(r)) if part)),
    ]
    notes = [
        "One image, one class, in a fresh process per row; the peak is VmHWM over the model-loaded baseline "
        "(TensorFlow, the model, one prediction). 'after': the batch memory.fitting_batch_size picks, from the "
        "rows per model call the handler uses at that size (session.rows_per_call: 16 at 224 px, 1 at 1024 px), "
        "in the method's family function (limit MB: its template MemorySize unless --memory-limit-mb), with the "
        "bounded classes; "
        "'before': the session's batch (what fitting the batch changes), or for IntegratedGradients and Occlusion "
        "Xplique's own class at the same batch (what the bounded class changes).",
        f"UNDER-ESTIMATE: estimate/measured below {UNDER_ESTIMATE_RATIO} (too little margin against an OOM kill). "
        "Models: MobileNetV2, random weights, alpha 1.0 at 224 px and alpha 0.35 at 1024 px; vgg: a VGG-style "
        f"CNN (blocks {VGG_BLOCKS} of (filters, 3x3 ReLU convolutions), random weights) at 224 px, which checks "
        "the estimate but does not size the template. Counts are reduced to "
        "two batches of passes (peak memory follows the batch once it is bounded); fixed parts that grow with a "
        "count are named by their parameters.",
    ]
    for family, rec in (section.get("recommendation") or {}).items():
        notes.append(f"{family}: largest measured peak (baseline + peak over it, 'after'): {rec['needed_mb']:.0f} MB "
                     f"({rec['method']}, {rec['size']} px) x {rec['margin']} -> MemorySize {rec['memory_mb']} MB "
                     f"(template: {rec['limit_mb']} MB)")
    return [format_table("Memory: peak RSS per method (MB)", columns, section["rows"], notes)]


if __name__ == "__main__":
    main()
