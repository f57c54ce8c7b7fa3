"""Write the API Gateway (REST, proxy integration) events in events/api-*.json.

They are the shape API Gateway sends a Lambda proxy integration, with the Lambda authorizer's
principal in ``requestContext.authorizer`` (built by :mod:`devtools.local.api_gateway`). The
inline inputs are a held-out demo image, demo table rows and demo reviews, so the functional tests can check
real predictions. Run ``python -m devtools.api_events`` after changing the demo data; the files
are committed.
"""

import base64
import json
from pathlib import Path

from devtools import demo_model, tabular_demo, text_demo
from devtools.local.api_gateway import TEST_API_KEY, explain_event, rest_event
from devtools.samples import encode_image

EVENTS = Path(__file__).resolve().parent.parent / "events"
#: The inline text of events/api-explain-text.json: a clearly positive review.
TEXT_REVIEW = "I loved it, truly wonderful"
#: The job of events/api-create-insights.json: two feature visualizations of the demo model, a few steps.
INSIGHTS_SPEC = {
    "title": "What the shapes model looks for", "seed": 7,
    "feature_visualization": {"objectives": [{"class": "circle"},
                                             {"layer": "last_conv", "type": "channel", "indexes": [0, 1]}],
                              "steps": 32},
}
#: The job id of events/api-get-insights-job.json (replace it with the one POST /insights answered).
INSIGHTS_JOB_ID = "fedcba9876543210fedcba9876543210"


def events() -> dict[str, dict]:
    images, _, _ = demo_model.sample_images(6)  # the functional tests' ``samples``: image 0
    png = base64.b64encode(encode_image(images[0], "PNG")).decode()
    rows, _ = tabular_demo.sample_rows(4)
    csv = base64.b64encode(tabular_demo.sample_csv(rows)).decode()
    shapes = {"name": demo_model.NAME, "version": demo_model.VERSION}
    sentiment = {"name": text_demo.MODEL, "version": text_demo.VERSION}
    reviews = base64.b64encode(text_demo.sample_files()["reviews.jsonl"]).decode()
    return {
        "api-explain-gradient.json": explain_event("gradient", {
            "model": shapes, "methods": ["Saliency", "GradCAM"], "input_base64": png, "filename": "sample-0.png",
        }),
        "api-explain-perturbation-async.json": explain_event("perturbation", {
            "model": shapes, "methods": ["Occlusion"], "params": {"Occlusion": {"patch_size": 16}},
            "input_base64": png, "filename": "sample-0.png", "mode": "async",
        }),
        "api-explain-shap-table.json": explain_event("shap", {
            "model": {"name": "breast-cancer-xgb", "version": tabular_demo.VERSION},
            "methods": ["TreeExplainer"], "input_base64": csv, "filename": "patients.csv",
        }),
        "api-explain-text.json": explain_event("gradient", {
            "model": sentiment, "methods": ["IntegratedGradients", "Saliency"], "input_text": TEXT_REVIEW,
        }),
        "api-explain-text-file.json": explain_event("perturbation", {
            "model": sentiment, "methods": ["WordOcclusion"], "input_base64": reviews, "filename": "reviews.jsonl",
        }),
        "api-explain-malformed.json": explain_event("gradient", '{"model": {"name": "shapes", '),
        "api-explain-unknown-model.json": explain_event("gradient", {
            "model": {"name": "no-such-model", "version": "v1"}, "input_base64": png,
        }),
        "api-explain-invalid-params.json": explain_event("gradient", {
            "model": shapes, "methods": ["IntegratedGradients"], "params": {"IntegratedGradients": {"steps": 100000}},
            "input_base64": png,
        }),
        "api-list-models.json": rest_event("GET", "/models", "/models"),
        "api-get-model.json": rest_event("GET", "/models/{name}/{version}", "/models/{name}/{version}".format(**shapes),
                                         path_parameters=dict(shapes)),
        "api-list-methods.json": rest_event("GET", "/methods", "/methods", query={"family": "shap"}),
        "api-create-upload.json": rest_event("POST", "/uploads", "/uploads", body={"filename": "large photo.jpg"}),
        "api-get-job.json": rest_event("GET", "/jobs/{job_id}", "/jobs/0123456789abcdef0123456789abcdef",
                                       path_parameters={"job_id": "0123456789abcdef0123456789abcdef"}),
        "api-create-insights.json": rest_event("POST", "/insights", "/insights", body={
            "model": shapes, "spec": INSIGHTS_SPEC}),
        "api-get-insights-job.json": rest_event("GET", "/jobs/{job_id}", f"/jobs/{INSIGHTS_JOB_ID}",
                                                path_parameters={"job_id": INSIGHTS_JOB_ID}),
        "api-authorizer-token.json": {
            "type": "TOKEN", "authorizationToken": f"Bearer {TEST_API_KEY}",
            "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/v1/POST/explanations/gradient",
        },
    }


def main(names: list[str] | None = None) -> None:
    """Write every event, or only those named."""
    for name, event in events().items():
        if names and name not in names:
            continue
        (EVENTS / name).write_text(json.dumps(event, indent=2) + "\n")
        print(f"wrote events/{name}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
