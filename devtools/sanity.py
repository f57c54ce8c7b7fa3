"""Sanity checks (Adebayo et al. 2018) of a family's methods on the demo model; prints the table.

``python -m devtools.sanity`` (``make sanity``) runs :mod:`explain_core.sanity` on the demo CNN
(:mod:`devtools.demo_model`) over the first rows of its ``background.npy`` (held-in training
images of the four classes), in this process: no emulator, the same code as the functions.
``--chart`` and ``--json`` keep the report's chart and JSON (docs/images/sanity-demo.png is made so).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from devtools import demo_model
from explain_core.runtime import prepare_writable_dirs


def demo_loaded(family: str):
    """The demo model as the store would load it, with its background in the model's input space."""
    import keras

    from explain_core.model_card import ModelCard
    from explain_core.model_store import BACKGROUND_FILE, LoadedModel

    directory = demo_model.ensure_demo_model()
    card = ModelCard.model_validate_json((directory / "card.json").read_text())
    model = keras.saving.load_model(directory / "model.keras", compile=False, safe_mode=True)
    loaded = LoadedModel(demo_model.NAME, demo_model.VERSION, model, card, model_etag="local", card_etag="local",
                         load_seconds=0.0, source="local")
    loaded.background = loaded.modality.prepare_background(np.load(directory / BACKGROUND_FILE), card)
    return loaded


def run(family: str, request, context=None) -> "object":
    """The sanity report (explain_core.sanity.SanityReport) of ``request`` on the demo model; ``context``:
    a Lambda context whose remaining time bounds the methods run (None: no bound)."""
    from explain_core.sanity import CHART_FILE, SanityChecks
    from explain_core.session import ExplanationSession
    from explain_core.settings import Settings

    session = ExplanationSession(family, Settings(input_bucket="local", results_bucket="local",
                                                  model_bucket="local"), s3_client=None)
    return SanityChecks(session).run(demo_loaded(family), request, context, request_id="demo",
                                     request_key="(local)", chart_key=CHART_FILE)


def table(report) -> str:
    """The report as a Markdown table: one row per method."""
    lines = ["| method | Spearman rho, trained vs randomised (mean; min to max) | SSIM, predicted vs other "
             "class (mean) | verdict | seconds |", "| --- | --- | --- | --- | --- |"]
    for method in report.methods:
        if method.status != "succeeded":
            lines.append(f"| {method.name} | - | - | {method.verdict} | {method.seconds or '-'} |")
            continue
        rho, ssim = method.model_randomisation, method.random_logit
        lines.append(f"| {method.name} | {rho.mean:.2f} ({min(rho.per_image):.2f} to {max(rho.per_image):.2f}) | "
                     f"{ssim.mean:.2f} | {method.verdict} | {method.seconds:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="gradient", choices=("gradient", "perturbation", "shap"))
    parser.add_argument("--methods", default="all", help="comma-separated method names, or all")
    parser.add_argument("--images", type=int, default=demo_model.BACKGROUND_COUNT,
                        help="background rows used (the demo background has %(default)s)")
    parser.add_argument("--randomised-layers", type=float, default=0.25,
                        help="share of weight layers randomised from the output down (default %(default)s)")
    parser.add_argument("--params", default="{}", help='JSON, e.g. {"Rise": {"nb_samples": 500}}')
    parser.add_argument("--chart", type=Path, help="write the chart (PNG) here")
    parser.add_argument("--json", type=Path, help="write the report (JSON) here")
    args = parser.parse_args(argv)
    prepare_writable_dirs()
    from explain_core.sanity import chart_png, parse_request

    request = parse_request(json.dumps({
        "methods": [name.strip() for name in args.methods.split(",")], "params": json.loads(args.params),
        "images": {"source": "background", "count": args.images}, "randomised_layers": args.randomised_layers,
    }).encode())
    report = run(args.family, request)
    randomisation = report.randomisation
    print(f"{report.family} methods on {report.model['name']}/{report.model['version']}: {report.images.count} "
          f"background images; randomised layers {', '.join(randomisation.randomised_layers)} "
          f"({len(randomisation.randomised_layers)} of {randomisation.weight_layers}); predicted class changed on "
          f"{randomisation.predictions_changed:.0%} of the images; {report.seconds:.1f} s")
    print(table(report))
    if args.chart:
        args.chart.parent.mkdir(parents=True, exist_ok=True)
        args.chart.write_bytes(chart_png(report))
        print(f"chart: {args.chart}")
    if args.json:
        args.json.write_text(json.dumps(report.model_dump(mode="json"), indent=2, allow_nan=False))
        print(f"report: {args.json}")
    return 0 if report.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
