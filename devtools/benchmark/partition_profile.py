"""Section ``partition-profile``: where the Partition explainer's time goes on 4 demo images at
max_evals=200: first use in a fresh process, a warm call split into pieces, and variants (model
function, batch size). The findings are in the package's docstring (``devtools.benchmark``)."""

import contextlib
import functools
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import numpy as np

from devtools.benchmark.harness import Harness
from devtools.benchmark.shap_vs_xplique import raw_partition
from devtools.benchmark.subjects import IMAGE_SEED, REPO, Subject
from devtools.benchmark.timing import (
    CountingForward,
    best_of,
    model_inputs,
    predict_forward,
    predicted_targets,
    ratio,
    traced_forward,
)
from explain_core.attribution import build_explainer, run_method
from explain_core.registry import REGISTRY, SHAP
from explain_core.shap_methods import quiet

#: The case of the issue: 4 small images, 200 evaluations, the demo CNN.
PROFILE_IMAGES, PROFILE_EVALS = 4, 200


class SelfTimer:
    """Exclusive (self) seconds and call counts of wrapped functions, nested calls subtracted from their callers."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._children: list[float] = []

    def wrap(self, label: str, function: Callable) -> Callable:
        @functools.wraps(function)
        def timed(*args, **kwargs):
            self._children.append(0.0)
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                children = self._children.pop()
                self.seconds[label] = self.seconds.get(label, 0.0) + elapsed - children
                self.calls[label] = self.calls.get(label, 0) + 1
                if self._children:
                    self._children[-1] += elapsed

        return timed

    @contextlib.contextmanager
    def patch(self, owner, name: str, label: str):
        """Time ``owner.name`` (a module, class or instance attribute) while the block runs."""
        own = vars(owner).get(name, _MISSING)
        # A function found on a class stays a plain function, so that it still binds to instances.
        setattr(owner, name, self.wrap(label, getattr(owner, name) if own is _MISSING else own))
        try:
            yield
        finally:
            if own is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, own)


_MISSING = object()


#: What the warm profile times, and the label each piece is reported under.
PROFILE_PIECES = (
    ("model forward (traced tf.function)", "explainer.outputs", "_forward"),
    ("pixels <-> model input (to/from_pixels)", "explainer", "from_pixels"),
    ("pixels <-> model input (to/from_pixels)", "explainer", "to_pixels"),
    ("masking (Image masker: blur once, copy per mask)", "shap.maskers.Image", "__call__"),
    ("partition tree + mask matrix (per explainer)", "shap.maskers.Image", "build_partition_tree"),
    ("partition tree + mask matrix (per explainer)", "shap.explainers._partition", "make_masks"),
    ("MaskedModel: batching, output averaging", "shap.utils._masked_model.MaskedModel", "_full_masking_call"),
    ("owen: priority queue, mask building, values", "shap.explainers._partition.PartitionExplainer", "owen"),
)


COLD_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    clock = time.perf_counter
    started = clock()
    import numpy as np
    import keras
    from explain_core.attribution import build_explainer, run_method, to_model_input
    from explain_core.model_card import ModelCard
    from explain_core.registry import REGISTRY
    from devtools import shapes
    directory, count, evals, seed, batch = sys.argv[1], *map(int, sys.argv[2:])
    times = {"import TensorFlow, Keras, explain_core": clock() - started}
    card = ModelCard.model_validate_json(open(os.path.join(directory, "card.json")).read())
    model = keras.saving.load_model(os.path.join(directory, "model.keras"), compile=False, safe_mode=True)
    inputs = to_model_input(shapes.dataset(count, seed=seed, size=card.input_height)[0], card)
    targets = np.eye(len(card.class_names), dtype=np.float32)[model.predict_on_batch(inputs).argmax(axis=1)]
    step = clock()
    import shap
    times["import shap"] = clock() - step
    spec = REGISTRY["PartitionExplainer"]
    explainer = build_explainer(spec, model, card, spec.resolve({"max_evals": evals}, inputs.shape[1:3]), batch)
    step = clock()
    masker = shap.maskers.Image("blur(16,16)", inputs.shape[1:])
    times["numba: partition tree (first Image masker)"] = clock() - step
    step = clock()
    shap.Explainer(lambda x: np.zeros((len(x), 1)), masker, algorithm="partition")
    times["numba: mask matrix (first Partition explainer)"] = clock() - step
    step = clock()
    for size in (1, 2, batch):  # the traced forward's first shapes (reduce_retracing relaxes them after)
        explainer.outputs(np.zeros((size, *inputs.shape[1:]), np.float32))
    times["TensorFlow tracing of the forward"] = clock() - step
    step = clock()
    run_method(explainer, inputs, targets)
    times["first explain() (numba: output averaging, rest)"] = clock() - step
    step = clock()
    run_method(explainer, inputs, targets)
    times["second explain() (warm)"] = clock() - step
    print(json.dumps(times))
""")


def partition_cold(subject: Subject, batch: int) -> dict:
    """First use in a fresh process (what a cold Lambda start pays), measured in a subprocess."""
    command = [sys.executable, "-c", COLD_SCRIPT, str(subject.directory), str(PROFILE_IMAGES), str(PROFILE_EVALS),
               str(IMAGE_SEED), str(batch)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode:
        raise RuntimeError(f"cold-start probe failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def profile_partition_warm(explainer, inputs, targets) -> dict:
    """Exclusive seconds per piece of one warm explain() (see PROFILE_PIECES), plus the model calls."""
    import importlib

    timer = SelfTimer()
    counter = CountingForward(explainer.outputs._forward)
    explainer.outputs._forward = counter
    owners = {"explainer": explainer, "explainer.outputs": explainer.outputs}
    try:
        with contextlib.ExitStack() as stack:
            for label, where, name in PROFILE_PIECES:
                if where not in owners:
                    module, _, attribute = where.rpartition(".")
                    try:
                        owners[where] = importlib.import_module(where)
                    except ImportError:
                        owners[where] = getattr(importlib.import_module(module), attribute)
                stack.enter_context(timer.patch(owners[where], name, label))
            started = time.perf_counter()
            with quiet():
                run_method(explainer, inputs, targets)
            total = time.perf_counter() - started
    finally:
        explainer.outputs._forward = counter.forward
    pieces = dict(timer.seconds)
    pieces["other (explain_row, lower_credit, Explanation, wrapper)"] = total - sum(pieces.values())
    return {"total_s": total, "pieces": pieces, "calls": timer.calls, "sizes": counter.sizes}


def benchmark_partition_profile(harness: Harness, subject: Subject, args) -> dict:
    """Where PartitionExplainer's time goes on 4 demo images at 200 evaluations: cold, warm split, variants."""
    card, model = subject.card, subject.model()
    inputs = model_inputs(subject, subject.images(PROFILE_IMAGES))
    batch = harness.session_batch_size(SHAP)
    targets = predicted_targets(model, inputs, card, batch)
    spec = REGISTRY["PartitionExplainer"]
    params = spec.resolve({"max_evals": PROFILE_EVALS}, subject.input_size)
    result = {"images": PROFILE_IMAGES, "evaluations": PROFILE_EVALS,
              "classes": sorted({int(c) for c in targets.argmax(axis=1)})}

    started = time.perf_counter()
    try:
        result["cold"] = partition_cold(subject, batch)
    except Exception as exc:  # report and go on
        result["cold"], result["cold_error"] = {}, f"{type(exc).__name__}: {exc}"[:300]
    print(f"[partition-profile] cold start probe: {time.perf_counter() - started:.1f} s", flush=True)

    explainer = build_explainer(spec, model, card, params, batch)
    run_method(explainer, inputs, targets)  # warm-up
    result["warm"] = profile_partition_warm(explainer, inputs, targets)

    variants = [("ours: PartitionExplainer", batch, lambda b: build_explainer(spec, model, card, params, b)),
                ("ours: PartitionExplainer", 256, lambda b: build_explainer(spec, model, card, params, b))]
    rows = []
    for label, batch_size, make in variants:
        explainer = make(batch_size)
        counter = CountingForward(explainer.outputs._forward)
        explainer.outputs._forward = counter
        run_method(explainer, inputs, targets)  # warm-up

        def run(explainer=explainer, counter=counter):
            counter.reset()
            return run_method(explainer, inputs, targets).attributions

        seconds, attributions = best_of(args.repeats, run)
        rows.append({"variant": label, "batch_size": batch_size, "seconds": seconds, "calls": len(counter.sizes),
                     "rows": sum(counter.sizes), "forward_s": counter.seconds, "attributions": attributions})
    reference = rows[0]["attributions"]
    for row in rows:
        row["max_abs_diff"] = float(np.max(np.abs(row.pop("attributions") - reference)))
    forwards = {"model.predict": lambda: predict_forward(model),
                "predict_on_batch": lambda: (lambda x: model.predict_on_batch(np.asarray(x, np.float32))),
                "tf.function": lambda: traced_forward(model)}
    for name, batch_size in (("model.predict", "auto"), ("model.predict", batch), ("predict_on_batch", batch),
                             ("tf.function", "auto"), ("tf.function", batch), ("tf.function", 256)):
        counter = CountingForward(forwards[name]())
        raw_partition(counter, inputs[:1], PROFILE_EVALS, batch_size)  # warm-up

        def run(counter=counter, batch_size=batch_size):
            counter.reset()
            return raw_partition(counter, inputs, PROFILE_EVALS, batch_size)

        seconds, _ = best_of(args.repeats, run)
        rows.append({"variant": f"raw shap, f = {name}", "batch_size": batch_size, "seconds": seconds,
                     "calls": len(counter.sizes), "rows": sum(counter.sizes), "forward_s": counter.seconds,
                     "max_abs_diff": None})
    for row in rows:
        row["s_per_image"] = row["seconds"] / PROFILE_IMAGES
        row["vs_ours"] = ratio(row["seconds"], rows[0]["seconds"])
    result["variants"] = rows
    print(f"[partition-profile] done in {time.perf_counter() - started:.1f} s", flush=True)
    return result
