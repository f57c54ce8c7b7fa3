"""Visual options end to end: uploads with rendering metadata through the gradient handler on the emulator,
their overlays and raw heatmaps decoded from the results bucket, and the manifest's record of the options."""

import io

import numpy as np
from PIL import Image

from explain_core.rendering import BAR_WIDTH, MARGIN
from tests.conftest import png_bytes, read_json, upload_event


def _png(s3, bucket: str, key: str) -> np.ndarray:
    image = Image.open(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    assert image.format == "PNG" and image.mode == "RGB"
    return np.asarray(image, dtype=int)


def test_uploads_with_rendering_options(invoke, s3, deployment, samples, unique_prefix):
    images, labels, _ = samples
    base = f"incoming/gradient/shapes/v1/{unique_prefix}/"
    wide, ordinary, bad = base + "wide.png", base + "circle.png", base + "bad.png"
    strip = np.repeat(images[0], 32, axis=1)[::6][:20]  # 20 x 4096 pixels
    bucket = deployment.bucket("InputBucket")
    s3.put_object(Bucket=bucket, Key=wide, Body=png_bytes(strip), Metadata={
        "methods": "GradientInput", "polarity": "signed", "clip-percentiles": "1,99", "colorbar": "false",
        "overlay": "heatmap-only"})
    s3.put_object(Bucket=bucket, Key=ordinary, Body=png_bytes(images[list(labels).index(0)]),
                      Metadata={"methods": "GradientInput"})
    s3.put_object(Bucket=bucket, Key=bad, Body=png_bytes(images[0]),
                      Metadata={"methods": "GradientInput", "polarity": "signed", "colormap": "jet"})

    assert invoke("gradient", upload_event(wide, ordinary, bad, family="gradient")) == {"batchItemFailures": []}

    results = deployment.bucket("ResultsBucket")
    manifests = {key: read_json(s3, results, "results/" + key.removeprefix("incoming/") + "/manifest.json")
                 for key in (wide, ordinary)}
    for manifest in manifests.values():
        assert manifest["status"] == "succeeded", manifest
        (output,) = manifest["methods"][0]["outputs"]
        assert {output["heatmap"], output["raw_heatmap"], output["attributions"]} == set(manifest["output_keys"])
        assert output["raw_heatmap"].endswith(f"/GradientInput/{output['class_index']}-{output['class_name']}"
                                              ".heatmap.png")
        low, high = output["heatmap_range"]
        attributions = np.load(io.BytesIO(s3.get_object(Bucket=results, Key=output["attributions"])["Body"].read()))
        magnitude = np.abs(attributions.mean(axis=-1))
        assert 0 <= low < high <= magnitude.max()  # clipped inside the map's own range
        raw = _png(s3, results, output["raw_heatmap"])
        assert raw.shape == (64, 64, 3)  # the model's input size

    wide_manifest, ordinary_manifest = manifests[wide], manifests[ordinary]
    assert wide_manifest["rendering"] == {"polarity": "signed", "colormap": "RdBu_r", "clip_percentiles": [1.0, 99.0],
                                          "alpha": 0.9, "overlay": "heatmap-only", "colorbar": False}
    assert ordinary_manifest["rendering"] == {"polarity": "absolute", "colormap": "jet",
                                              "clip_percentiles": [0.0, 99.5], "alpha": 0.9, "overlay": "blend",
                                              "colorbar": True}

    # The strip: 1024 x 5 pixels letterboxed onto 1024 x 224; colorbar=false: no panel on its right.
    (output,) = wide_manifest["methods"][0]["outputs"]
    overlay = _png(s3, results, output["heatmap"])
    assert overlay.shape == (224, 1024, 3)
    assert (overlay[:100, :1024] == 255).all() and (overlay[125:, :1024] == 255).all()  # the letterbox
    band = overlay[110:114, :1024]
    assert (band != 255).any(axis=-1).all()  # the picture: heatmap colours only (heatmap-only)
    # Signed: both signs of GradientInput appear, red and blue, in the raw heatmap.
    raw = _png(s3, results, output["raw_heatmap"])
    assert ((raw[..., 0] - raw[..., 2]) > 60).sum() > 20 and ((raw[..., 2] - raw[..., 0]) > 60).sum() > 20

    # The ordinary 128 x 128 sample: upscaled to the readable 224 x 224, grey image under the colours, and
    # by default a colour bar on its right: the colour map's many colours along its middle column.
    (output,) = ordinary_manifest["methods"][0]["outputs"]
    overlay = _png(s3, results, output["heatmap"])
    assert overlay.shape[0] == 224 and 224 + 40 < overlay.shape[1] < 224 + 120
    bar = overlay[:, 224 + MARGIN + BAR_WIDTH // 2]
    assert len(np.unique(bar[(bar.max(axis=-1) - bar.min(axis=-1)) > 100], axis=0)) > 50

    # A bad option: a typed error record, no manifest.
    record = read_json(s3, results, "errors/" + bad.removeprefix("incoming/") + ".json")
    assert record["error"]["code"] == "invalid_rendering" and "diverging" in record["error"]["message"]
    assert not record["retrying"]
