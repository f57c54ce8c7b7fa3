"""Section ``xla``: what XLA costs on this CPU, where the functions could use it.

TensorFlow logs "Compiled cluster using XLA!" in the perturbation function: Xplique's Sobol estimators are
``@tf.function(jit_compile=True)`` (the Sobol attribution method, and CRAFT's concept importance in the
insights function). Nothing else compiles with XLA: Keras' ``jit_compile="auto"`` is off on a CPU-only
machine, the handler's forward (``frameworks.keras.traced_forward``) and the model functions of
``attribution.model_functions`` are plain graphs. ``attribution.xplique_without_xla`` turns the estimators'
XLA off before their first call. This section measures both ways in one process, on fresh ``tf.function``
copies of the same Python functions. The estimator's helpers are nested Xplique ``tf.function``s that
follow the global setting, so the estimator row calls ``xplique_without_xla`` first (as the functions do at
init): its plain copy then runs them as plain graphs whatever ran earlier in the process.

* the Jansen estimator on the masks of ``SobolAttributionMethod`` at the registry defaults of each model
  (first call: tracing and, with XLA, compiling; warm: best of several calls), with the largest difference
  between the two results;
* each model's batched forward pass, ``jit_compile=True`` against a plain graph (first call and warm).
"""

import time

import numpy as np

from devtools.benchmark.harness import Harness
from devtools.benchmark.report import Column, format_table
from devtools.benchmark.subjects import SUBJECTS
from devtools.benchmark.timing import FORWARD_BATCH, best_of, model_inputs, ratio

SECTION = "xla"
#: Images per forward pass under XLA (MobileNetV2 takes 0.5 s per image with XLA on this CPU).
XLA_FORWARD_BATCH = 8
#: Warm calls of the XLA forward pass (each call of MobileNetV2 takes seconds).
XLA_FORWARD_REPEATS = 2


def add_arguments(parser) -> None:
    parser.add_argument("--xla-repeats", type=int, default=5,
                        help="warm calls per measurement of the xla section, the best kept (default: 5)")


def first_and_warm(call, repeats: int, max_runs: int) -> tuple[float, float, np.ndarray]:
    """(seconds of the first call, best warm seconds, result) of ``call``."""
    started = time.perf_counter()
    result = np.asarray(call())
    first = time.perf_counter() - started
    warm, _ = best_of(repeats, lambda: np.asarray(call()), min_total=0.5, max_runs=max_runs)
    return first, warm, result


def compare(what: str, make, repeats: int, max_runs: int = 20) -> dict:
    """One row: ``make(jit_compile)`` gives a call; XLA against a plain graph, first call and warm."""
    xla_first, xla_warm, xla_result = first_and_warm(make(True), repeats, max_runs)
    plain_first, plain_warm, plain_result = first_and_warm(make(False), repeats, max_runs)
    return {
        "what": what, "xla_first_s": xla_first, "plain_first_s": plain_first, "xla_warm_s": xla_warm,
        "plain_warm_s": plain_warm, "first_ratio": ratio(xla_first, plain_first),
        "warm_ratio": ratio(xla_warm, plain_warm),
        "max_abs_diff": float(np.max(np.abs(xla_result - plain_result))) if xla_result.size else 0.0,
    }


def estimator_row(subject, repeats: int) -> dict:
    """The Jansen estimator on SobolAttributionMethod's masks at the registry defaults, outputs of the model;
    Xplique's XLA turned off first (:func:`explain_core.attribution.xplique_without_xla`) so the XLA copy is
    the only one compiled."""
    import tensorflow as tf
    from xplique.attributions.global_sensitivity_analysis import JansenEstimator

    from explain_core.attribution import build_explainer, xplique_without_xla
    from explain_core.registry import REGISTRY

    xplique_without_xla()  # the nested helpers plain, as in the functions (see the module docstring)
    spec = REGISTRY["SobolAttributionMethod"]
    params = spec.resolve({}, subject.input_size)
    explainer = build_explainer(spec, subject.model(), subject.card, params, FORWARD_BATCH)
    masks, nb_design = explainer.masks, explainer.nb_design
    outputs = tf.constant(np.random.default_rng(0).random(len(masks)).astype(np.float32))
    estimator = JansenEstimator()

    def make(jit_compile: bool):
        # The estimator's helpers (masks_dim, split_abc, post_process) are nested tf.functions: inside an XLA
        # function they are compiled with it, inside a plain one they run as graphs if they are plain too.
        call = tf.function(JansenEstimator.__call__.python_function, jit_compile=jit_compile)
        return lambda: call(estimator, masks, outputs, nb_design)

    return {"model": subject.key, **compare(f"Sobol estimator (Jansen), {len(masks)} masks, grid "
                                            f"{params['grid_size']}, nb_design {nb_design}", make, repeats)}


def forward_row(subject, repeats: int) -> dict:
    """The model's batched forward pass (the floor's pass), XLA against a plain graph."""
    import tensorflow as tf

    model = subject.model()
    inputs = model_inputs(subject, subject.images(4))
    x = tf.constant(np.take(inputs, np.arange(XLA_FORWARD_BATCH) % len(inputs), axis=0))

    def make(jit_compile: bool):
        call = tf.function(lambda t: model(t, training=False), jit_compile=jit_compile)
        return lambda: call(x)

    row = compare(f"forward pass, batch of {XLA_FORWARD_BATCH}", make, min(repeats, XLA_FORWARD_REPEATS),
                  max_runs=min(repeats, XLA_FORWARD_REPEATS))
    return {"model": subject.key, **row, "keras_jit_compile": bool(model.jit_compile)}


def run(harness: Harness, args, results: dict) -> dict:
    rows = []
    for key in args.models:
        subject = SUBJECTS[key]()
        for measure in (estimator_row, forward_row):
            started = time.perf_counter()
            try:
                rows.append(measure(subject, args.xla_repeats))
            except Exception as exc:  # report and go on
                rows.append({"model": key, "what": measure.__name__, "error": f"{type(exc).__name__}: {exc}"[:300]})
            print(f"[xla] {key} {measure.__name__}: {time.perf_counter() - started:.1f} s", flush=True)
    return {"rows": rows}


COLUMNS = [
    Column("model", lambda r: r["model"]),
    Column("what", lambda r: r["what"]),
    Column("XLA first s", lambda r: r.get("xla_first_s"), "{:.3f}"),
    Column("plain first s", lambda r: r.get("plain_first_s"), "{:.3f}"),
    Column("first XLA/plain", lambda r: r.get("first_ratio"), "{:.1f}"),
    Column("XLA warm s", lambda r: r.get("xla_warm_s"), "{:.4f}"),
    Column("plain warm s", lambda r: r.get("plain_warm_s"), "{:.4f}"),
    Column("warm XLA/plain", lambda r: r.get("warm_ratio"), "{:.2f}"),
    Column("max |diff|", lambda r: r.get("max_abs_diff"), "{:.1e}"),
    Column("note", lambda r: f"FAILED {r['error']}" if r.get("error") else
           ("" if "keras_jit_compile" not in r else f"loaded model's jit_compile: {r['keras_jit_compile']}")),
]


def tables(section_results: dict, args) -> list[str]:
    return [format_table("XLA against plain graph execution (this CPU)", COLUMNS, section_results["rows"], [
        "Each row: the same Python function as two fresh tf.functions, jit_compile=True (XLA) and False (a plain",
        "  graph), in this process. first s: the first call (tracing, and for XLA the compilation);",
        f"  warm s: best of at least {args.xla_repeats} later calls ({XLA_FORWARD_REPEATS} for the forward pass:",
        "  seconds each under XLA on MobileNetV2). max |diff|: largest difference of the two results.",
        "Sobol estimator: where the functions compiled with XLA ('Compiled cluster using XLA!'): Xplique declares",
        "  it jit_compile=True; explain_core.attribution.xplique_without_xla runs it as a plain graph instead.",
        "forward pass: the model under XLA, which nothing in the functions asks for (Keras' jit_compile 'auto' is",
        "  off on a CPU: the loaded model's jit_compile is shown); measured to show what turning it on would cost.",
    ])]
