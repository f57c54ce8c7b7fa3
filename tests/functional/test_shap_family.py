"""The shap family's handler on image and tabular uploads: real SHAP values, checked for additivity."""

import csv
import io
import json

import numpy as np
import pytest

from devtools import demo_model, tabular_demo
from devtools.local.events import deliver
from explain_core.model_card import ModelCard
from explain_core.registry import REGISTRY, SHAP, methods_of
from tests.conftest import clear_outputs, event_keys, load_event, png_bytes, read_json, upload_event

pytestmark = pytest.mark.slow


def shap_methods(card: dict) -> tuple[str, ...]:
    """Every method of the family that can explain the model of ``card``, in the registry's order."""
    return tuple(spec.name for spec in methods_of(SHAP, ModelCard.model_validate(card)))


IMAGE_METHODS = shap_methods(demo_model.card())
TABULAR_METHODS = {name: shap_methods(tabular_demo.card(name)) for name in tabular_demo.MODELS}
#: Cheaper than the defaults; additivity does not depend on the sample counts except for
#: GradientExplainer (a Monte-Carlo estimate).
IMAGE_PARAMS = {"GradientExplainer": {"nb_samples": 200}, "PartitionExplainer": {"max_evals": 200},
                "SuperpixelKernelExplainer": {"nb_samples": 300, "nb_segments": 40}}


def image_key(name: str) -> str:
    return f"incoming/shap/shapes/v1/functional/{name}"


def results_of(key: str) -> str:
    return f"results/{key.removeprefix('incoming/')}/"


def load_npy(s3, bucket, key) -> np.ndarray:
    return np.load(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()), allow_pickle=False)


@pytest.fixture(scope="module")
def demo_keras_model(demo_model_dir):
    import keras

    return keras.saving.load_model(demo_model_dir / "model.keras", compile=False, safe_mode=True)


@pytest.fixture(scope="module")
def image_results(invoke, s3, deployment, samples):
    """One upload per demo class, explained by every image method of the family."""
    images, labels, masks = samples
    clear_outputs(s3, deployment, "shap")
    keys = []
    for i in range(3):
        key = image_key(f"sample-{i}.png")
        s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[i]),
                      Metadata={"methods": ",".join(IMAGE_METHODS), "params": json.dumps(IMAGE_PARAMS)})
        keys.append(key)
    response = invoke("shap", upload_event(*keys))
    results = deployment.bucket("ResultsBucket")
    manifests = [read_json(s3, results, results_of(key) + "manifest.json") for key in keys]
    return response, keys, manifests


def test_every_image_method_succeeds_with_base_values(image_results, samples):
    response, keys, manifests = image_results
    _, labels, _ = samples
    assert response == {"batchItemFailures": []}
    for manifest, label in zip(manifests, labels[:3], strict=True):
        assert manifest["status"] == "succeeded", json.dumps(manifest["methods"], indent=1)[:3000]
        assert manifest["predictions"][0]["class_index"] == label
        assert [m["name"] for m in manifest["methods"]] == list(IMAGE_METHODS)
        assert manifest["background"]["source"] == "background.npy"
        for method in manifest["methods"]:
            (output,) = method["outputs"]
            assert output["class_index"] == label
            assert output["output_kind"] == "logit"
            assert np.isfinite(output["base_value"])


#: |sum(values) + base - output| allowed, as a share of |output - base|. Deep SHAP, Partition and
#: Kernel SHAP are additive by construction (float rounding only); expected gradients estimates
#: an integral with nb_samples Monte-Carlo samples.
ADDITIVITY_TOLERANCE = {"DeepExplainer": 1e-3, "PartitionExplainer": 1e-3, "SuperpixelKernelExplainer": 1e-3,
                        "GradientExplainer": 0.15}


@pytest.mark.parametrize("method", IMAGE_METHODS)
def test_image_values_add_up_to_the_model_output(method, image_results, samples, s3, deployment, demo_keras_model):
    from devtools import demo_model

    _, keys, manifests = image_results
    images, _, _ = samples
    logits = demo_keras_model.predict_on_batch(demo_model.to_model_input(images[:3]))
    for i, manifest in enumerate(manifests):
        entry = next(m for m in manifest["methods"] if m["name"] == method)
        (output,) = entry["outputs"]
        values = load_npy(s3, deployment.bucket("ResultsBucket"), output["attributions"])
        assert values.shape == (64, 64, 3)
        explained = float(logits[i, output["class_index"]])
        error = abs(values.sum() + output["base_value"] - explained)
        assert error <= ADDITIVITY_TOLERANCE[method] * abs(explained - output["base_value"]) + 1e-4, (
            method, error, explained, output["base_value"])
        # The manifest carries the same error, always, with a warning naming the parameter past its threshold.
        found = output["approximation"]
        assert found["check"] == "additivity" and found["parameter"] == REGISTRY[method].accuracy_param
        assert found["absolute_error"] == pytest.approx(error, abs=1e-4)
        assert found["output_gap"] == pytest.approx(explained - output["base_value"], abs=1e-4)
        over = found["relative_error"] > found["threshold"]
        assert [w["parameter"] for w in output["warnings"] if w["code"] == "approximation_error"] == (
            [found["parameter"]] if over else [])
        if method != "GradientExplainer":  # additive by construction; expected gradients is a Monte-Carlo estimate
            assert found["relative_error"] < 1e-4, found


# --------------------------------------------------------------------------- tabular


def values_table(s3, bucket: str, key: str) -> tuple[list[str], np.ndarray, list[dict]]:
    """values.csv: (feature names, SHAP values (rows, features), the leading columns per row)."""
    rows = list(csv.reader(io.StringIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode())))
    header, body = rows[0], rows[1:]
    leading = ["line", "predicted_class", "base_value", "model_output"]
    assert header[:4] == leading
    values = np.array([[float(v) for v in row[4:]] for row in body])
    return header[4:], values, [dict(zip(leading, row[:4], strict=True)) for row in body]


@pytest.fixture(scope="module")
def tabular_event_results(invoke, s3, deployment, tabular_models):
    """The tabular event file: a CSV to the XGBoost model, a JSON Lines file to the Keras MLP."""
    from devtools import tabular_demo

    rows, labels = tabular_demo.sample_rows(8)
    event = load_event("shap-tabular-upload.json")
    keys = event_keys(event)
    methods = {name: ",".join(TABULAR_METHODS[name]) for name in tabular_demo.MODELS}  # every one that applies
    clear_outputs(s3, deployment, "shap")
    for key in keys:
        body = tabular_demo.sample_csv(rows) if key.endswith(".csv") else tabular_demo.sample_jsonl(rows)
        s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=body,
                      Metadata={"methods": methods[key.split("/")[2]]})
    response = invoke("shap", event)
    results = deployment.bucket("ResultsBucket")
    return response, rows, labels, {key: read_json(s3, results, results_of(key) + "manifest.json") for key in keys}


def test_tabular_event_file_is_explained(tabular_event_results):
    response, rows, labels, manifests = tabular_event_results
    assert response == {"batchItemFailures": []}
    for key, manifest in manifests.items():
        assert manifest["status"] == "succeeded", json.dumps(manifest["methods"], indent=1)[:3000]
        assert manifest["input"]["rows"] == 8 and manifest["input"]["columns"] == 30
        assert manifest["input"]["format"] == ("csv" if key.endswith(".csv") else "jsonl")
        assert manifest["model"]["modality"] == "tabular"
        assert manifest["explained_classes"] == [{"class_index": 0, "class_name": "malignant"}]
        assert sum(manifest["predictions"]["rows_per_class"].values()) == 8
        assert manifest["background"]["source"] == "background.npy" and manifest["background"]["rows"] == 32


def test_tree_explainer_is_exact_for_xgboost(tabular_event_results, tabular_models, s3, deployment):
    import xgboost

    _, rows, labels, manifests = tabular_event_results
    manifest = next(m for k, m in manifests.items() if "breast-cancer-xgb" in k)
    (entry,) = manifest["methods"]
    (output,) = entry["outputs"]
    assert output["output_kind"] == "log-odds"
    bucket = deployment.bucket("ResultsBucket")
    names, values, leading = values_table(s3, bucket, next(f for f in output["files"] if f.endswith("values.csv")))
    assert len(names) == 30 and values.shape == (8, 30)
    booster = xgboost.Booster()
    booster.load_model(str(tabular_models["breast-cancer-xgb"] / "model.json"))
    margin = booster.predict(xgboost.DMatrix(rows), output_margin=True)
    # Class 0 (malignant) is explained: its log-odds are the negated margin of class 1.
    base = np.array([float(r["base_value"]) for r in leading])
    error = np.abs(values.sum(axis=1) + base + margin)
    assert error.max() < 1e-5, error  # measured 2.5e-6 (XGBoost sums its trees in float32)
    assert [r["line"] for r in leading] == [str(line) for line in range(2, 10)]
    # The summary's additivity matches what we recomputed, and predictions agree with the model.
    summary = read_json(s3, bucket, output["summary"])
    assert summary["additivity"]["max_abs_error"] < 1e-5
    found = output["approximation"]
    assert found["exact"] and "parameter" not in found and found["rows"] == 8 and output["warnings"] == []
    assert found["max_absolute_error"] == pytest.approx(error.max(), abs=1e-6)
    assert found["min_abs_output_gap"] == pytest.approx(np.abs(-margin - base).min(), rel=1e-4)
    predicted = ["benign" if m > 0 else "malignant" for m in margin]
    assert [r["predicted_class"] for r in leading] == predicted
    assert np.mean(np.array(predicted) == np.array(["malignant", "benign"])[labels]) >= 0.75
    assert {f.rsplit("/", 1)[-1] for f in output["files"]} >= {
        "0-malignant.values.csv", "0-malignant.bar.png", "0-malignant.beeswarm.png",
        "0-malignant.waterfall-line-2.png"}
    for key in output["files"]:
        if key.endswith(".png"):
            assert s3.get_object(Bucket=bucket, Key=key)["Body"].read(8) == b"\x89PNG\r\n\x1a\n"


#: |sum(values) + base - output| allowed for the Keras MLP (logits), as a share of |output - base|
#: (at least 1). Kernel SHAP solves its regression under the additivity constraint and Deep SHAP
#: is exact for ReLU MLPs up to float32 rounding. Expected gradients is a Monte-Carlo estimate
#: (nb_samples=200 over a 32-row background): measured 0.2-26 % per row, 7 % on average.
TABULAR_TOLERANCE = {"KernelExplainer": 1e-4, "DeepExplainer": 1e-3, "GradientExplainer": 0.3}
TABULAR_MEAN_TOLERANCE = {"KernelExplainer": 1e-4, "DeepExplainer": 1e-3, "GradientExplainer": 0.12}


def test_every_method_has_an_additivity_tolerance():
    assert set(ADDITIVITY_TOLERANCE) == set(IMAGE_METHODS)
    assert set(TABULAR_TOLERANCE) == set(TABULAR_MEAN_TOLERANCE) == set(TABULAR_METHODS["breast-cancer-mlp"])


@pytest.mark.parametrize("method", TABULAR_METHODS["breast-cancer-mlp"])
def test_keras_tabular_values_add_up(method, tabular_event_results, tabular_models, s3, deployment):
    import keras

    _, rows, _, manifests = tabular_event_results
    manifest = next(m for k, m in manifests.items() if "breast-cancer-mlp" in k)
    entry = next(m for m in manifest["methods"] if m["name"] == method)
    (output,) = entry["outputs"]
    assert output["output_kind"] == "logit"
    _, values, leading = values_table(s3, deployment.bucket("ResultsBucket"),
                                      next(f for f in output["files"] if f.endswith("values.csv")))
    model = keras.saving.load_model(tabular_models["breast-cancer-mlp"] / "model.keras", compile=False,
                                    safe_mode=True)
    logits = np.asarray(model.predict_on_batch(rows.astype(np.float32)), dtype=np.float64)[:, 0]
    base = np.array([float(r["base_value"]) for r in leading])
    error = np.abs(values.sum(axis=1) + base - logits)
    relative = error / np.maximum(np.abs(logits - base), 1.0)
    assert relative.max() <= TABULAR_TOLERANCE[method], (method, relative)
    assert relative.mean() <= TABULAR_MEAN_TOLERANCE[method], (method, relative)
    # The manifest's summary of the rows: the same errors, relative to |gap| floored at 0.1 logit.
    found, gap = output["approximation"], np.abs(logits - base)
    assert found["max_absolute_error"] == pytest.approx(error.max(), abs=1e-5)
    assert found["mean_absolute_error"] == pytest.approx(error.mean(), abs=1e-5)
    assert found["mean_abs_output_gap"] == pytest.approx(gap.mean(), rel=1e-4)
    over = int((error / np.maximum(gap, found["min_output_gap"]) > found["threshold"]).sum())
    assert found["rows_over_threshold"] == over
    assert [w["parameter"] for w in output["warnings"] if w["code"] == "approximation_error"] == (
        [REGISTRY[method].accuracy_param] if over else [])
    if method != "GradientExplainer":
        assert over == 0


# --------------------------------------------------------------------------- bad input


def _csv(header: list[str], rows: list[list]) -> bytes:
    lines = [",".join(f'"{h}"' if "," in h else h for h in header)]
    lines += [",".join(str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def bad_tables(names: list[str], rows: np.ndarray) -> dict[str, tuple[bytes, str]]:
    """file name -> (body, the error code it must produce)."""
    good = [list(map(repr, row)) for row in rows[:3].tolist()]
    non_numeric = [row[:] for row in good]
    non_numeric[1][4] = "abc"
    missing = [row[:] for row in good]
    missing[2][7] = "NaN"
    over_limit = [good[0]] * 1001  # the template's MaxTableRows default is 1000
    return {
        "wrong-columns.csv": (_csv(names[:-1] + ["surprise"], [row[:-1] + ["1"] for row in good]), "invalid_table"),
        "non-numeric.csv": (_csv(names, non_numeric), "invalid_table"),
        "nan.csv": (_csv(names, missing), "invalid_table"),
        "empty.csv": (b"", "invalid_table"),
        "header-only.csv": (_csv(names, []), "invalid_table"),
        "over-limit.csv": (_csv(names, over_limit), "table_too_large"),
        "utf16.csv": (_csv(names, good).decode().encode("utf-16"), "invalid_table"),
        "broken.jsonl": (b'{"mean radius": 1.0,\n', "invalid_table"),
        "sheet.xlsx": (b"PK\x03\x04 not a table", "unsupported_table_format"),
    }


def test_bad_tables_get_error_records_and_never_crash(invoke, s3, deployment, tabular_models):
    from devtools import tabular_demo

    rows, _ = tabular_demo.sample_rows(4)
    cases = bad_tables(tabular_demo.feature_names(), rows)
    keys = {}
    clear_outputs(s3, deployment, "shap")
    for name, (body, _) in cases.items():
        key = f"incoming/shap/breast-cancer-xgb/v1/bad/{name}"
        s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=body)
        keys[name] = key
    response = invoke("shap", upload_event(*keys.values()))

    assert response == {"batchItemFailures": []}  # user errors are final: no retry
    results = deployment.bucket("ResultsBucket")
    for name, (_, code) in cases.items():
        record = read_json(s3, results, f"errors/{keys[name].removeprefix('incoming/')}.json")
        assert record["error"]["code"] == code, (name, record["error"])
        assert record["retrying"] is False
        assert record["input"]["key"] == keys[name]
    messages = {name: read_json(s3, results, f"errors/{keys[name].removeprefix('incoming/')}.json")["error"]["message"]
                for name in cases}
    assert "surprise" in messages["wrong-columns.csv"]
    assert "abc" in messages["non-numeric.csv"] and "line 3" in messages["non-numeric.csv"]
    assert "1000" in messages["over-limit.csv"]
    assert "UTF-8" in messages["utf16.csv"] or "UTF-16" in messages["utf16.csv"]


@pytest.mark.parametrize("model,method,body_kind", [
    ("breast-cancer-mlp", "TreeExplainer", "csv"),
    ("breast-cancer-xgb", "DeepExplainer", "csv"),
    ("shapes", "KernelExplainer", "png"),
])
def test_a_method_that_cannot_explain_the_model_is_refused(model, method, body_kind, invoke, s3, deployment,
                                                             tabular_models, samples):
    from devtools import tabular_demo

    key = f"incoming/shap/{model}/v1/mismatch/{method}.{body_kind}"
    body = tabular_demo.sample_csv(tabular_demo.sample_rows(2)[0]) if body_kind == "csv" else png_bytes(samples[0][0])
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=body, Metadata={"methods": method})

    assert invoke("shap", upload_event(key)) == {"batchItemFailures": []}

    record = read_json(s3, deployment.bucket("ResultsBucket"), f"errors/{key.removeprefix('incoming/')}.json")
    assert record["error"]["code"] == "unsupported_model"
    assert method in record["error"]["message"]


def test_deep_explainer_names_the_layer_it_cannot_handle(invoke, s3, deployment, tmp_path):
    """A GELU layer (TensorFlow's Erf/Neg ops) has no DeepLIFT rule in shap: a typed error, not a trace."""
    import keras

    from devtools import tabular_demo

    names = tabular_demo.feature_names()
    inputs = keras.Input((len(names),))
    hidden = keras.layers.Dense(8, activation="gelu", name="gelu_hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(hidden))
    model.save(tmp_path / "model.keras")
    card = {"name": "gelu-mlp", "version": "v1", "modality": "tabular", "feature_names": names,
            "class_names": ["malignant", "benign"], "output": "logits"}
    models = deployment.bucket("ModelBucket")
    s3.upload_file(str(tmp_path / "model.keras"), models, "models/gelu-mlp/v1/model.keras")
    s3.put_object(Bucket=models, Key="models/gelu-mlp/v1/card.json", Body=json.dumps(card).encode())
    key = "incoming/shap/gelu-mlp/v1/rows.csv"
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key,
                  Body=tabular_demo.sample_csv(tabular_demo.sample_rows(3)[0]),
                  Metadata={"methods": "DeepExplainer,KernelExplainer",
                            "params": '{"KernelExplainer": {"nb_samples": 64}}'})

    assert invoke("shap", upload_event(key)) == {"batchItemFailures": []}

    manifest = read_json(s3, deployment.bucket("ResultsBucket"), results_of(key) + "manifest.json")
    assert manifest["status"] == "partial"  # Kernel SHAP still explains it
    deep, kernel = manifest["methods"]
    assert deep["status"] == "failed" and kernel["status"] == "succeeded"
    assert deep["error"]["code"] == "unsupported_model"
    assert deep["error"]["details"]["layer"] == "gelu_hidden"
    assert "gelu_hidden" in deep["error"]["message"] and "Traceback" not in deep["error"]["message"]
    # No background.npy: the upload's own rows were the background, and the manifest says so.
    assert manifest["background"]["source"] == "default"


def test_duplicate_tabular_event_is_not_recomputed(invoke, s3, deployment, tabular_models):
    from devtools import tabular_demo

    key = "incoming/shap/breast-cancer-xgb/v1/dup/rows.csv"
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key,
                  Body=tabular_demo.sample_csv(tabular_demo.sample_rows(3)[0]))
    event = upload_event(key)
    invoke("shap", event)
    manifest_key = results_of(key) + "manifest.json"
    first = s3.head_object(Bucket=deployment.bucket("ResultsBucket"), Key=manifest_key)["LastModified"]
    invoke("shap", event)
    assert s3.head_object(Bucket=deployment.bucket("ResultsBucket"), Key=manifest_key)["LastModified"] == first


def test_a_new_background_is_not_mistaken_for_a_duplicate(invoke, s3, deployment, tabular_models):
    from devtools import tabular_demo

    directory = tabular_models["breast-cancer-xgb"]
    models = deployment.bucket("ModelBucket")
    tabular_demo.publish(s3, models, directory, "xgb-background")
    card = {**json.loads((directory / "card.json").read_text()), "name": "xgb-background"}
    s3.put_object(Bucket=models, Key="models/xgb-background/v1/card.json", Body=json.dumps(card).encode())
    key = "incoming/shap/xgb-background/v1/rows.csv"
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key,
                  Body=tabular_demo.sample_csv(tabular_demo.sample_rows(3)[0]),
                  Metadata={"methods": "TreeExplainer",
                            "params": '{"TreeExplainer": {"feature_perturbation": "interventional"}}'})
    event = upload_event(key)
    invoke("shap", event)
    manifest_key = results_of(key) + "manifest.json"
    first = read_json(s3, deployment.bucket("ResultsBucket"), manifest_key)

    background = np.load(directory / "background.npy")[:8]
    buffer = io.BytesIO()
    np.save(buffer, background, allow_pickle=False)
    s3.put_object(Bucket=models, Key="models/xgb-background/v1/background.npy", Body=buffer.getvalue())
    invoke("shap", event)

    second = read_json(s3, deployment.bucket("ResultsBucket"), manifest_key)
    assert (first["background"]["rows"], second["background"]["rows"]) == (32, 8)
    # Interventional Tree SHAP integrates over the background: another background, another base value.
    assert first["methods"][0]["outputs"][0]["base_value"] != second["methods"][0]["outputs"][0]["base_value"]


def test_a_tabular_method_that_would_outlast_the_invocation_is_refused(handlers, deployment, s3, tabular_models):
    """1000 rows x 10000 coalitions x 32 background rows cannot fit the 10 s a 30 s invocation leaves."""
    from devtools import tabular_demo
    from devtools.local import lambda_service

    rows, _ = tabular_demo.sample_rows(8)
    key = "incoming/shap/breast-cancer-mlp/v1/budget/many.csv"
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key,
                  Body=tabular_demo.sample_csv(np.repeat(rows, 125, axis=0)),
                  Metadata={"methods": "DeepExplainer,KernelExplainer",
                            "params": '{"KernelExplainer": {"nb_samples": 10000}}'})
    wiring = deployment.function_for_family("shap")
    context = lambda_service.LocalLambdaContext(wiring.logical_id, wiring.memory, timeout_seconds=30)
    with lambda_service.function_environment(deployment, wiring):
        assert handlers["shap"](deliver(upload_event(key), s3), context) == {"batchItemFailures": []}

    manifest = read_json(s3, deployment.bucket("ResultsBucket"), results_of(key) + "manifest.json")
    deep, kernel = manifest["methods"]
    assert manifest["input"]["rows"] == 1000 and manifest["status"] == "partial"
    assert deep["status"] == "succeeded"
    assert kernel["status"] == "failed" and kernel["error"]["code"] == "over_time_budget"
    assert kernel["error"]["details"]["estimated_seconds"] > kernel["error"]["details"]["available_seconds"]


def test_feature_names_from_an_xgboost_model_or_from_the_upload(invoke, s3, deployment, tabular_models, tmp_path):
    """Cards without feature_names: an XGBoost model trained on a DataFrame keeps its names; a Keras
    model takes the upload's header, in the file's order, checked against its input width."""
    import pandas as pd
    import xgboost

    from devtools import tabular_demo

    rows, labels = tabular_demo.sample_rows(40)
    names = [name.replace(" ", "_") for name in tabular_demo.feature_names()]
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 2, "seed": 0},
                            xgboost.DMatrix(pd.DataFrame(rows, columns=names), label=labels), num_boost_round=10)
    booster.save_model(str(tmp_path / "model.ubj"))
    models = deployment.bucket("ModelBucket")
    s3.upload_file(str(tmp_path / "model.ubj"), models, "models/named-xgb/v1/model.ubj")
    s3.put_object(Bucket=models, Key="models/named-xgb/v1/card.json", Body=json.dumps({
        "name": "named-xgb", "version": "v1", "modality": "tabular", "model_file": "model.ubj", "output": "margin",
        "class_names": ["malignant", "benign"]}).encode())
    mlp = tabular_models["breast-cancer-mlp"]
    card = {**json.loads((mlp / "card.json").read_text()), "name": "unnamed-mlp", "feature_names": None}
    s3.upload_file(str(mlp / "model.keras"), models, "models/unnamed-mlp/v1/model.keras")
    s3.put_object(Bucket=models, Key="models/unnamed-mlp/v1/card.json", Body=json.dumps(card).encode())

    # The upload's columns in another order than the model's: matched by name for the XGBoost model.
    shuffled = list(reversed(range(len(names))))
    header = ",".join(names[i] for i in shuffled)
    lines = [",".join(repr(float(v)) for v in row[shuffled]) for row in rows[:4]]
    body = "\n".join([header, *lines, ""]).encode()
    inputs = deployment.bucket("InputBucket")
    s3.put_object(Bucket=inputs, Key="incoming/shap/named-xgb/v1/rows.csv", Body=body)
    s3.put_object(Bucket=inputs, Key="incoming/shap/unnamed-mlp/v1/rows.csv", Body=tabular_demo.sample_csv(rows[:4]),
                  Metadata={"methods": "DeepExplainer"})
    for key in ("incoming/shap/named-xgb/v1/rows.csv", "incoming/shap/unnamed-mlp/v1/rows.csv"):
        assert invoke("shap", upload_event(key)) == {"batchItemFailures": []}

    results = deployment.bucket("ResultsBucket")
    named = read_json(s3, results, "results/shap/named-xgb/v1/rows.csv/manifest.json")
    assert named["status"] == "succeeded" and named["input"]["feature_names_from"] == "model"
    columns, values, leading = values_table(s3, results, next(
        f for f in named["methods"][0]["outputs"][0]["files"] if f.endswith("values.csv")))
    assert columns == names  # the model's order, whatever the file's
    margin = booster.predict(xgboost.DMatrix(pd.DataFrame(rows[:4], columns=names)), output_margin=True)
    base = np.array([float(r["base_value"]) for r in leading])
    np.testing.assert_allclose(values.sum(axis=1) + base, margin, atol=1e-5)  # class 1 (benign) by default

    unnamed = read_json(s3, results, "results/shap/unnamed-mlp/v1/rows.csv/manifest.json")
    assert unnamed["status"] == "succeeded" and unnamed["input"]["feature_names_from"] == "upload"
    assert unnamed["model"]["features"] == 30
