"""Approximation errors of the methods that have a check, on the demo models, as a parameter grows.

For every registry method with an approximation check (explain_core.approximation), this runs
the method on the main job's samples (held-out demo images, predicted class; sample patient rows,
the card's explained class) at several values of the parameter that raises its accuracy, and
prints the relative error (absolute error / max(|f(x) - reference|, floor)) the manifest would
carry: mean and largest over the samples. The thresholds of explain_core.approximation were
chosen from this table (docs/approximation.md).

Run ``python -m devtools.approximation`` (a few minutes on 2 cores; ``--quick`` for defaults only).
"""

import argparse
import time

import numpy as np

from devtools import demo_model, tabular_demo
from explain_core import approximation
from explain_core.attribution import build_explainer, raw_outputs, run_method
from explain_core.frameworks import handler_for
from explain_core.modalities import modality_for
from explain_core.model_card import ModelCard
from explain_core.registry import METHODS
from explain_core.shap_methods import output_kind

#: Values of each method's accuracy parameter measured (the default is always added).
GRID = {
    "IntegratedGradients": (2, 8, 16, 32, 128, 256),
    "GradientExplainer": (50, 1000, 5000),
    "DeepExplainer": (4,),
    "PartitionExplainer": (100, 2000),
    "SuperpixelKernelExplainer": (100, 2000),
    "KernelExplainer": (100, 2000),
}
#: The main job's samples: images and patient rows.
IMAGES = 6
ROWS = 8
BATCH_SIZE = 64


def _load(directory, card):
    return handler_for(card).load(str(directory / card.model_file), card.name, card.version)


def image_setup():
    directory = demo_model.ensure_demo_model()
    card = ModelCard.model_validate(demo_model.card())
    model = _load(directory, card)
    images, _, _ = demo_model.sample_images(IMAGES)
    inputs = demo_model.to_model_input(images)
    outputs = raw_outputs(model, inputs, card, BATCH_SIZE)
    classes = np.argmax(outputs, axis=1)
    background = modality_for(card).prepare_background(np.load(directory / "background.npy"), card)
    return model, card, inputs, outputs, classes, background


def measure_image(spec, params, setup) -> np.ndarray:
    """Relative errors of one method on the demo images (one per image)."""
    model, card, inputs, outputs, classes, background = setup
    explainer = build_explainer(spec, model, card, params, BATCH_SIZE, background)
    targets = np.eye(len(card.class_names), dtype=np.float32)[classes]
    result = run_method(explainer, inputs, targets)
    checks = approximation.image_checks(spec, params, result.attributions, inputs, outputs, classes, model, card,
                                        BATCH_SIZE, base_values=result.base_values)
    return np.array([check.relative_error for check, _ in checks])


def table_setup(name: str):
    directory = tabular_demo.ensure_tabular_models()[name]
    card = ModelCard.model_validate(tabular_demo.card(name))
    model = _load(directory, card)
    rows, _ = tabular_demo.sample_rows(ROWS)
    background = modality_for(card).prepare_background(np.load(directory / "background.npy"), card)
    return model, card, rows, background


def measure_table(spec, params, setup) -> np.ndarray:
    """Relative errors of one method on the sample rows (one per row), explained class of the card."""
    model, card, rows, background = setup
    cls = card.default_explained_classes()[0]
    explainer = build_explainer(spec, model, card, params, BATCH_SIZE, background)
    targets = np.zeros((len(rows), len(card.class_names)), dtype=np.float32)
    targets[:, cls] = 1.0
    values = explainer.explain(rows, targets)
    outputs = raw_outputs(model, rows, card, BATCH_SIZE)[:, cls]
    figures = approximation.approximation_errors(values.sum(axis=1), explainer.base_values, outputs,
                                                 output_kind(card))
    return figures["relative"]


def rows_of_table(quick: bool) -> list[tuple[str, str, str, int | None, np.ndarray, float]]:
    """(method, model, parameter, value, relative errors, seconds) for every measured setting."""
    measured = []
    image = image_setup()
    tables = {}
    for spec in METHODS:
        if spec.approximation is None:
            continue
        values = [spec.defaults.get(spec.accuracy_param)] if spec.accuracy_param else [None]
        if not quick and spec.accuracy_param:
            values = sorted({*values, *GRID.get(spec.name, ())})
        for modality in spec.modalities:
            models = [demo_model.NAME] if modality == "image" else [
                name for name in tabular_demo.MODELS
                if spec.supports(ModelCard.model_validate(tabular_demo.card(name)))]
            for name in models:
                for value in values:
                    params = dict(spec.defaults)
                    if spec.accuracy_param:
                        params[spec.accuracy_param] = value
                    started = time.perf_counter()
                    if modality == "image":
                        errors = measure_image(spec, params, image)
                    else:
                        if name not in tables:
                            tables[name] = table_setup(name)
                        errors = measure_table(spec, params, tables[name])
                    measured.append((spec.name, name, spec.accuracy_param or "-", value, errors,
                                     time.perf_counter() - started))
                    print(f"{spec.name} {name} {spec.accuracy_param}={value}: mean {errors.mean():.2%} "
                          f"max {errors.max():.2%}", flush=True)
    return measured


def format_table(measured) -> str:
    lines = ["| method | model | parameter | relative error, mean | largest | over threshold | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for method, model, parameter, value, errors, seconds in measured:
        spec = next(spec for spec in METHODS if spec.name == method)
        over = int((errors > approximation.RELATIVE_ERROR_THRESHOLD[spec.approximation]).sum())
        setting = f"{parameter}={value}" if value is not None else "-"
        if value is not None and value == spec.defaults[parameter]:
            setting += " (default)"
        lines.append(f"| {method} | {model} | {setting} | {_percent(errors.mean())} | {_percent(errors.max())} | "
                     f"{over} of {len(errors)} | {seconds:.1f} |")
    return "\n".join(lines)


def _percent(value: float) -> str:
    return f"{value:.2%}" if value >= 1e-4 else f"{value:.1e}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="registry defaults only")
    args = parser.parse_args(argv)
    print(format_table(rows_of_table(args.quick)))


if __name__ == "__main__":
    main()
