"""Section ``shap-vs-xplique``: on the demo CNN and the same images, at N model evaluations per
image, Xplique's KernelShap and our SHAP image explainers against the raw shap calls they stand for.

The raw shap calls are the baselines, written here as a user of shap would: Kernel SHAP over SLIC
segments as shap's image example writes it, and written for speed (segments, fill and masking
from :mod:`explain_core.shap_methods`, so only the shap call differs from ours); shap's Partition
explainer with ``f = model.predict`` and with a traced function.
"""

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from devtools.benchmark.harness import Harness
from devtools.benchmark.subjects import Subject
from devtools.benchmark.timing import (
    CountingForward,
    best_of,
    measure_forward,
    model_inputs,
    predict_forward,
    predicted_targets,
    ratio,
    traced_forward,
)
from explain_core.attribution import build_explainer, preprocess, run_method
from explain_core.model_card import ModelCard
from explain_core.registry import PERTURBATION, REGISTRY, SHAP
from explain_core.shap_methods import fill_image, mask_segments, quiet, slic_segments, to_pixels


def raw_kernel_docs(forward: CountingForward, card: ModelCard, inputs, classes, nsamples: int,
                    nb_segments: int = 50, compactness: float = 10.0) -> CountingForward:
    """shap.KernelExplainer over SLIC segments as shap's image Kernel SHAP example writes it.

    A per-segment masking loop, ``f = model.predict`` of every class, shap's default ``l1_reg``
    (``num_features(10)``: a LARS selection per output).
    """
    import shap

    forward.reset()
    for pixels, _ in zip(np.clip(to_pixels(inputs, card), 0, 255), classes, strict=True):
        segments = slic_segments(pixels, nb_segments, compactness)

        def f(z, pixels=pixels, segments=segments):
            background = pixels.mean((0, 1))
            out = np.zeros((z.shape[0], *pixels.shape))
            for i in range(z.shape[0]):
                out[i] = pixels
                for j in range(z.shape[1]):
                    if z[i, j] == 0:
                        out[i][segments == j, :] = background
            return forward(preprocess(out, card))

        count = int(segments.max()) + 1
        explainer = shap.KernelExplainer(f, np.zeros((1, count)))
        np.random.seed(0)
        with quiet():
            explainer.shap_values(np.ones((1, count)), nsamples=nsamples, silent=True)
    return forward


def raw_kernel_fast(forward: CountingForward, card: ModelCard, inputs, classes, nsamples: int) -> CountingForward:
    """shap.KernelExplainer over SLIC segments written for speed: vectorised masks, traced forward, one class.

    Segments, fill and masking are SuperpixelKernelExplainer's own (``explain_core.shap_methods``)
    with its registry defaults (``fill``: a Gaussian blur of sigma a tenth of the side, or the mean
    colour): only the shap call around them is written here, as a shap user would.
    """
    import shap

    defaults = REGISTRY["SuperpixelKernelExplainer"].defaults
    forward.reset()
    for pixels, cls in zip(np.clip(to_pixels(inputs, card), 0, 255), classes, strict=True):
        segments = slic_segments(pixels, defaults["nb_segments"], defaults["compactness"])
        fill = fill_image(pixels, defaults["fill"])

        def f(z, pixels=pixels, segments=segments, fill=fill, cls=cls):
            return forward(preprocess(mask_segments(z, pixels, segments, fill), card))[:, cls]

        count = int(segments.max()) + 1
        explainer = shap.KernelExplainer(f, np.zeros((1, count)))
        np.random.seed(0)
        with quiet():
            explainer.shap_values(np.ones((1, count)), nsamples=nsamples, l1_reg=False, silent=True)
    return forward


def raw_partition(forward: CountingForward, inputs, max_evals: int, batch_size, blur: int = 16) -> CountingForward:
    """shap's Partition explainer with a blur Image masker, explaining each image's top class.

    The masker blurs the model-space images directly (blurring commutes with the card's per-channel
    affine preprocessing, so this equals blurring pixels).
    """
    import shap

    masker = shap.maskers.Image(f"blur({blur},{blur})", inputs.shape[1:])
    explainer = shap.Explainer(forward, masker, algorithm="partition", seed=0)
    with quiet():
        explainer(inputs, max_evals=max_evals, batch_size=batch_size, outputs=shap.Explanation.argsort.flip[:1],
                  silent=True)
    return forward


@dataclasses.dataclass
class ShapCase:
    """What every shap-vs-xplique variant is given: the model, the batch, its targets, the batch sizes."""

    subject: Subject
    inputs: np.ndarray
    targets: np.ndarray
    batch: int  # the shap session's batch size
    perturbation_batch: int  # the perturbation session's batch size (Xplique's KernelShap)
    background: np.ndarray | None

    @property
    def classes(self) -> np.ndarray:
        return self.targets.argmax(axis=1)

    def ours(self, name: str, overrides: dict) -> Callable[[], CountingForward | None]:
        """A warm-able run of a registry method built as the session builds it (model rows counted for SHAP)."""
        spec = REGISTRY[name]
        shap_family = spec.family == SHAP
        explainer = build_explainer(spec, self.subject.model(), self.subject.card,
                                    spec.resolve(overrides, self.subject.input_size),
                                    self.batch if shap_family else self.perturbation_batch,
                                    self.background if shap_family else None)
        counter = None
        if shap_family:
            counter = CountingForward(explainer.outputs._forward)
            explainer.outputs._forward = counter

        def run():
            if counter:
                counter.reset()
            run_method(explainer, self.inputs, self.targets)
            return counter

        return run

    def partition(self, forward: CountingForward, evaluations: int, batch_size) -> Callable[[], CountingForward]:
        def run():
            forward.reset()
            return raw_partition(forward, self.inputs, evaluations, batch_size)

        return run

    def variants(self, evaluations: int) -> list[tuple[str, str, Callable, str | None]]:
        """(label, library, run, label of the reference row) for N = ``evaluations``."""
        model, card = self.subject.model(), self.subject.card
        n = evaluations
        # Each model function is made once, so that its tf.function is traced by the warm-up run only.
        predict, traced = CountingForward(predict_forward(model)), CountingForward(traced_forward(model), self.batch)
        return [
            ("KernelShap (grid 8x8)", "xplique", self.ours("KernelShap", {"nb_samples": n, "grid_size": 8}),
             "shap Kernel, fast"),
            ("SuperpixelKernelExplainer", "ours", self.ours("SuperpixelKernelExplainer", {"nb_samples": n}),
             "shap Kernel, fast"),
            ("shap Kernel, docs way", "shap",
             lambda: raw_kernel_docs(predict, card, self.inputs, self.classes, n), "shap Kernel, fast"),
            ("shap Kernel, fast", "shap", lambda: raw_kernel_fast(traced, card, self.inputs, self.classes, n), None),
            ("PartitionExplainer", "ours", self.ours("PartitionExplainer", {"max_evals": n}), "shap Partition, fast"),
            ("shap Partition, naive", "shap", self.partition(predict, n, "auto"), "shap Partition, fast"),
            ("shap Partition, fast", "shap", self.partition(traced, n, self.batch), None),
        ]


def measure_variant(run: Callable[[], CountingForward | None], images: int, repeats: int) -> dict:
    """Seconds per image of a warm run (best of ``repeats``), with the model rows it asked for when counted."""
    run()  # warm-up: tracing, numba compilation
    seconds, counter = best_of(repeats, run)
    measured = {"s_per_image": seconds / images}
    if counter is not None:
        measured["model_rows_per_image"] = sum(counter.sizes) / images
        measured["model_calls_per_image"] = len(counter.sizes) / images
        measured["forward_s_per_image_measured"] = counter.seconds / images
    return measured


def benchmark_shap_vs_xplique(harness: Harness, subject: Subject, args) -> list[dict]:
    """Xplique's KernelShap, our SHAP image explainers and the raw shap calls, at the same evaluation counts."""
    inputs = model_inputs(subject, subject.images(args.images))
    batch = harness.session_batch_size(SHAP)
    case = ShapCase(subject, inputs, predicted_targets(subject.model(), inputs, subject.card, batch), batch,
                    harness.session_batch_size(PERTURBATION), subject.background())
    forward = measure_forward(subject.model(), inputs)
    rows = []
    for evaluations in args.shap_evals:
        measured = {}
        for label, library, run, reference in case.variants(evaluations):
            started = time.perf_counter()
            row = {"evaluations": evaluations, "method": label, "library": library, "images": len(inputs),
                   "reference": reference or "-", "forward_s_per_image": forward["s_per_image"],
                   "floor_s": evaluations * forward["s_per_image"], "s_per_image": None, "error": None}
            try:
                row.update(measure_variant(run, len(inputs), args.repeats))
            except Exception as exc:  # report and go on
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            measured[label] = row
            rows.append(row)
            print(f"[shap-vs-xplique] N={evaluations} {label}: {time.perf_counter() - started:.1f} s", flush=True)
        for row in measured.values():
            row["vs_reference"] = ratio(row["s_per_image"], measured.get(row["reference"], row)["s_per_image"])
            row["over_floor"] = ratio(row["s_per_image"], row["floor_s"])
    return rows
