"""A warm function meeting a new number of images per invocation does not trace its model again.

Lambda delivers 1 to BatchSize messages per invocation; Xplique's gradient and score functions (and Keras'
predict_on_batch) traced the whole model again for every new number of rows: 2.3-2.5 s each time on
MobileNetV2, in a warm function (docs/benchmark.md). The handler's model functions now have a None batch
dimension (explain_core.attribution.model_functions, frameworks.keras.traced_forward).
"""

import json

import pytest

from devtools.benchmark.timing import TraceCounter
from tests.conftest import png_bytes, read_json, upload_event

pytestmark = pytest.mark.slow

#: (method, its parameters, whether the method's own small Xplique helpers keep their shapes too).
METHODS = [("Saliency", {}, True), ("IntegratedGradients", {"steps": 8}, False), ("GradCAM", {}, False),
           # explain_core's own: LRP's relevance pass and XRAI's gradients have a None batch dimension too.
           ("LRP", {}, True), ("XRAI", {"steps": 8}, True)]


@pytest.mark.parametrize(("method", "params", "no_trace_at_all"), METHODS)
def test_a_warm_invocation_with_another_number_of_images_traces_no_model_graph(
        invoke, s3, deployment, samples, unique_prefix, method, params, no_trace_at_all):
    images = samples[0]
    results = deployment.bucket("ResultsBucket")

    def invocation(label: str, count: int) -> TraceCounter:
        keys = [f"incoming/gradient/shapes/v1/{unique_prefix}/{method}-{label}-{i}.png" for i in range(count)]
        metadata = {"methods": method, "params": json.dumps({method: params})}
        for key, pixels in zip(keys, images, strict=False):
            s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(pixels), Metadata=metadata)
        with TraceCounter() as traces:
            assert invoke("gradient", upload_event(*keys, family="gradient")) == {"batchItemFailures": []}
        for key in keys:
            manifest = read_json(s3, results, f"results/{key.removeprefix('incoming/')}/manifest.json")
            assert manifest["status"] == "succeeded", manifest
        return traces

    invocation("warm", 2)  # model load, explainer build, its model graph traced (a None batch dimension)
    for label, count in (("three", 3), ("one", 1)):
        traces = invocation(label, count)
        assert traces.model == 0, f"{count} image(s) after 2 traced a model graph: {traces.names}"
        if no_trace_at_all:
            assert traces.count == 0, traces.names
