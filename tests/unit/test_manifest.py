"""The typed manifest (explain_core.manifest): stored manifests still read and re-serialise to the
same bytes, a manifest built field by field is the JSON the untyped writer produced, the API and
job status read it through the same models, and a field is defined once."""

import io
import json
import math
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from pydantic import ValidationError

from explain_core import api_models, manifest
from explain_core.api_responses import Links, explanation_result
from explain_core.manifest import BackgroundDescription, ClassScore, ErrorDetail, Manifest, MethodEntry
from explain_core.modalities.image import ImageInput, ImageModel, ImageOutput
from explain_core.modalities.table import TableInput, TableModel, TableOutput, TablePredictions
from explain_core.settings import Settings

STORED = Path(__file__).resolve().parents[1] / "data" / "manifests"
FIXTURES = sorted(STORED.glob("*.json"))
RESULTS = "explain-results"


def test_every_kind_of_stored_manifest_is_kept():
    names = {path.stem for path in FIXTURES}
    # images of each family, tables of both frameworks, API and job inputs, failed methods
    assert {"gradient-image-api", "perturbation-image", "shap-image", "shap-table-xgboost-job",
            "shap-table-keras-jsonl", "gradient-image-partial-nan-attributions",
            "shap-table-partial-unsupported-model"} <= names


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_a_stored_manifest_reads_and_writes_back_the_same_bytes(path):
    raw = path.read_bytes()
    parsed = Manifest.from_json(raw)
    assert parsed.to_json_bytes() == raw
    assert json.loads(parsed.to_json_bytes()) == json.loads(raw)
    assert parsed.to_dict() == json.loads(raw)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_a_stored_manifest_reads_into_its_modality_s_models(path):
    document = json.loads(path.read_bytes())
    parsed = Manifest.from_json(path.read_bytes())
    table = document["model"]["modality"] == "tabular"
    assert isinstance(parsed.input, TableInput if table else ImageInput)
    assert isinstance(parsed.model, TableModel if table else ImageModel)
    if table:
        assert isinstance(parsed.predictions, TablePredictions)
    else:
        assert all(isinstance(p, ClassScore) for p in parsed.predictions)
    assert (parsed.background is not None) == (parsed.family == "shap")
    for method, stored in zip(parsed.methods, document["methods"], strict=True):
        assert all(isinstance(o, TableOutput if table else ImageOutput) for o in method.outputs)
        if stored["status"] == "failed":
            assert isinstance(method.error, ErrorDetail) and method.error.code == stored["error"]["code"]
            assert "seconds" not in stored and method.seconds is None
        else:
            assert "error" not in stored and method.error is None


# --------------------------------------------------------------------------- writing
def _build_like_the_session(document: dict) -> Manifest:
    """The manifest the session builds, field by field, from what the untyped writer had: optional
    values passed as None where that writer left the key out."""
    stored_input, stored_model = document["input"], document["model"]
    location = {"bucket": stored_input["bucket"], "key": stored_input["key"], "etag": stored_input["etag"],
                "version_id": stored_input.get("version_id")}
    identity = {k: stored_model[k] for k in ("name", "version", "etag", "card_etag", "framework", "loaded_from")}
    if stored_model["modality"] == "tabular":
        input_ = TableInput(**location, format=stored_input["format"], rows=stored_input["rows"],
                            columns=stored_input["columns"], feature_names_from=stored_input["feature_names_from"])
        model = TableModel(**identity, modality="tabular", features=stored_model["features"])
        predictions = TablePredictions(rows_per_class=document["predictions"]["rows_per_class"])
    else:
        input_ = ImageInput(**location, format=stored_input["format"], width=stored_input["width"],
                            height=stored_input["height"], source_mode=stored_input["source_mode"],
                            conversions=stored_input["conversions"])
        model = ImageModel(**identity, modality="image", input_size=stored_model["input_size"])
        predictions = [ClassScore(**p) for p in document["predictions"]]

    methods = []
    for stored in document["methods"]:
        entry = MethodEntry(name=stored["name"], params=stored["params"],
                            passes_per_image=stored["passes_per_image"], reference=stored["reference"])
        for output in stored["outputs"]:
            if "summary" in output:
                entry.outputs.append(TableOutput(**output))
            else:
                entry.outputs.append(ImageOutput(**{"base_value": None, "output_kind": None, **output}))
        if stored["status"] == "failed":
            entry.status = "failed"
            entry.error = ErrorDetail(**stored["error"])
        entry.seconds = stored.get("seconds")
        entry.seconds_per_image = stored.get("seconds_per_image")
        entry.batch_rows = stored.get("batch_rows")
        methods.append(entry)

    built = Manifest(
        status=document["status"], family=document["family"], input=input_, model=model, predictions=predictions,
        explained_classes=[ClassScore(**c) for c in document["explained_classes"]], methods=methods,
        background=BackgroundDescription(**document["background"]) if "background" in document else None,
        timings={k: v for k, v in document["timings"].items() if k != "write_s"},
        versions=document["versions"], results_prefix=document["results_prefix"], attempt=document["attempt"],
    )
    # at write time
    built.request_id = document["request_id"]
    built.created_at = document["created_at"]
    built.timings["write_s"] = document["timings"]["write_s"]
    built.output_keys = document["output_keys"]
    return built


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_a_manifest_built_field_by_field_is_the_json_the_untyped_writer_wrote(path):
    raw = path.read_bytes()
    assert _build_like_the_session(json.loads(raw)).to_json_bytes() == raw


def _image_manifest(**changes) -> Manifest:
    return _build_like_the_session({**json.loads((STORED / "gradient-image-api.json").read_bytes()), **changes})


def test_absent_keys_stay_absent_and_request_id_may_be_null():
    built = _image_manifest(request_id=None)
    document = built.to_dict()
    assert "version_id" not in document["input"] and "background" not in document
    output = document["methods"][0]["outputs"][0]
    assert "base_value" not in output and "output_kind" not in output
    assert "error" not in document["methods"][0]
    assert document["request_id"] is None  # the one field written as null

    built.input.version_id = "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"
    built.methods[0].outputs[0].base_value = 0.25
    assert built.to_dict()["input"]["version_id"] == "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"
    assert built.to_dict()["methods"][0]["outputs"][0]["base_value"] == 0.25


def test_a_method_entry_is_built_incrementally_and_always_lists_status_and_outputs():
    entry = MethodEntry(name="Saliency", params={}, passes_per_image=1, reference="paper")
    assert entry.to_dict() == {"name": "Saliency", "params": {}, "passes_per_image": 1, "reference": "paper",
                               "status": "succeeded", "outputs": []}
    # an unexpected exception's error has no details, as the untyped writer wrote it
    entry.status = "failed"
    entry.error = ErrorDetail(type="RuntimeError", code="method_failed", message="boom")
    assert entry.to_dict()["status"] == "failed"
    assert entry.to_dict()["error"] == {"type": "RuntimeError", "code": "method_failed", "message": "boom"}
    with pytest.raises(ValidationError):
        entry.status = "exploded"


def test_a_typo_in_a_writer_s_field_name_is_refused():
    with pytest.raises(ValidationError, match="seconds_per_img"):
        MethodEntry(name="Saliency", params={}, passes_per_image=1, reference="paper", seconds_per_img=0.1)
    with pytest.raises(ValidationError):
        ImageModel(name="m", version="v1", etag="e", card_etag="c", modality="tabular", framework="keras",
                   input_size=[64, 64], loaded_from="s3")


def test_unknown_keys_of_another_writer_are_read_and_written_back():
    document = json.loads((STORED / "shap-table-xgboost-job.json").read_bytes())
    document["schema_version"] = 2
    document["input"]["sha256"] = "ab" * 32
    document["methods"][0]["outputs"][0]["plot_theme"] = "dark"
    document["methods"][0]["gpu"] = None
    parsed = Manifest.from_json(json.dumps(document))
    assert parsed.to_dict() == document
    assert Manifest.from_dict(document).to_dict() == document


def test_nan_or_infinity_is_refused_on_write():
    built = _image_manifest()
    built.predictions[0].score = math.nan
    with pytest.raises(ValueError):
        built.to_json_bytes()
    built = _image_manifest()
    built.timings["predict_s"] = math.inf
    with pytest.raises(ValueError):
        built.to_json_bytes()


def test_a_manifest_does_not_read_without_its_required_fields():
    document = json.loads((STORED / "shap-image.json").read_bytes())
    del document["methods"][0]["outputs"][0]["heatmap"]
    with pytest.raises(ValidationError):
        Manifest.from_dict(document)


# --------------------------------------------------------------------------- defined once
def test_the_api_reuses_the_manifest_models():
    assert api_models.ErrorDetail is manifest.ErrorDetail
    assert api_models.ClassScore is manifest.ClassScore
    assert api_models.Family is manifest.Family
    fields = api_models.ExplanationResult.model_fields
    for name in ("model", "input", "predictions", "explained_classes", "status", "results_prefix", "timings"):
        assert fields[name].description == Manifest.model_fields[name].description, name


def test_openapi_documents_the_manifest_s_models():
    from devtools import openapi

    schemas = json.loads(openapi.generate())["components"]["schemas"]
    for model in (ImageInput, TableInput, ImageModel, TableModel, TablePredictions, ClassScore, ErrorDetail):
        documented = schemas[model.__name__]["properties"]
        assert list(documented) == list(model.model_fields), model.__name__
        for name, field in model.model_fields.items():
            assert documented[name].get("description") == field.description, (model.__name__, name)


# --------------------------------------------------------------------------- reading: API and job status
class _FakeS3:
    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects

    def generate_presigned_url(self, operation, Params, ExpiresIn):  # noqa: N803 (boto3's names)
        return f"https://s3.local/{Params['Bucket']}/{Params['Key']}?expires={ExpiresIn}"

    def get_object(self, Bucket, Key):  # noqa: N803
        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Key])}


@pytest.fixture
def links():
    settings = Settings(input_bucket="explain-input", results_bucket=RESULTS, model_bucket="explain-models")
    return Links(settings, s3_client=_FakeS3({}))


def _url(key: str) -> str:
    return f"https://s3.local/{RESULTS}/{key}?expires=3600"


def test_an_image_manifest_becomes_the_api_s_result(links):
    stored = Manifest.from_json((STORED / "gradient-image-partial-nan-attributions.json").read_bytes())
    result = explanation_result(stored, links, "results/x/manifest.json", cached=True)
    assert result.cached and result.manifest_url == _url("results/x/manifest.json")
    assert result.status == "partial" and result.input is stored.input and result.model is stored.model
    failed, succeeded = result.methods
    assert failed.status == "failed" and failed.error is stored.methods[0].error and not failed.outputs
    (output,) = succeeded.outputs
    stored_output = stored.methods[1].outputs[0]
    assert output.heatmap_url == _url(stored_output.heatmap)
    assert output.attributions_url == _url(stored_output.attributions)
    assert output.attributions_shape == stored_output.attributions_shape and output.score == stored_output.score
    assert output.summary_url is None and output.files == {}


def test_a_table_manifest_becomes_the_api_s_result(links):
    stored = Manifest.from_json((STORED / "shap-table-keras-jsonl.json").read_bytes())
    result = explanation_result(stored, links, "results/x/manifest.json")
    assert result.predictions.rows_per_class == {"malignant": 5, "benign": 3}
    output, stored_output = result.methods[0].outputs[0], stored.methods[0].outputs[0]
    assert output.summary_url == _url(stored_output.summary) and output.heatmap_url is None
    assert output.files == {key.rsplit("/", 1)[1]: _url(key) for key in stored_output.files}
    assert (output.base_value, output.output_kind) == (stored_output.base_value, stored_output.output_kind)
    assert json.loads(result.model_dump_json())["input"]["rows"] == 8


def test_job_status_reads_the_stored_manifest(links):
    from explain_core.jobs import job_status

    raw = (STORED / "shap-table-xgboost-job.json").read_bytes()
    job = {"job_id": "7c6937a22f354255b18bba89e9504400", "family": "shap", "model": "breast-cancer-xgb",
           "version": "v1", "created_at": "2026-12-01T16:54:18+00:00", "input_key": "uploads/x/api-rows.csv",
           "manifest_key": "results/job/manifest.json", "error_key": "errors/job.json"}
    status = job_status(job, _FakeS3({"results/job/manifest.json": raw}), links, now=0)
    assert status.status == "succeeded" and status.result.status == "succeeded"
    assert status.result.input == Manifest.from_json(raw).input

    record = {"status": "failed", "error": {"type": "UnsupportedFormatError", "code": "unsupported_format",
                                            "message": "no", "details": {}, "hint": "a newer writer's key"},
              "retrying": False}
    status = job_status(job, _FakeS3({"errors/job.json": json.dumps(record).encode()}), links, now=0)
    assert status.status == "failed" and status.error.code == "unsupported_format"
