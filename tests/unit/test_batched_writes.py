"""Writes shared by the inputs of a batch, and the first writes that skip their read (issue 15, item 2):
the guarantees of docs/reliability.md hold with them."""

import copy
import json

from explain_core import gallery
from explain_core.results import SOURCE_ORDER, ResultWriter
from explain_core.settings import Settings
from tests.unit.test_gallery import ConditionalS3, image_manifest, objects_for, stored_manifest

SETTINGS = Settings(input_bucket="in", results_bucket="out", model_bucket="m")
INDEX = "results/gradient/shapes/v1/index.html"


class CountingS3(ConditionalS3):
    """ConditionalS3 that also counts reads and records DeleteObjects calls."""

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []
        self.deletes: list[list[str]] = []

    def head_object(self, Bucket, Key):  # noqa: N803 (boto3's names)
        self.reads.append(Key)
        return super().head_object(Bucket, Key)

    def get_object(self, Bucket, Key):  # noqa: N803
        self.reads.append(Key)
        return super().get_object(Bucket, Key)

    def put_object(self, Bucket, Key, Body, ContentType=None, IfMatch=None, IfNoneMatch=None,  # noqa: N803
                   Metadata=None):
        super().put_object(Bucket, Key, Body, ContentType, IfMatch, IfNoneMatch)

    def delete_objects(self, Bucket, Delete):  # noqa: N803
        keys = [item["Key"] for item in Delete["Objects"]]
        self.deletes.append(keys)
        for key in keys:
            self.objects.pop(key, None)
        return {}


def other_input(manifest: dict, name: str) -> dict:
    """The same manifest for another input of the same model."""
    other = copy.deepcopy(manifest)
    old_name = manifest["input"]["key"].rsplit("/", 1)[-1]
    other["input"]["key"] = manifest["input"]["key"].replace(old_name, name)
    other["results_prefix"] = manifest["results_prefix"].replace(old_name, name)
    other["output_keys"] = [key.replace(old_name, name) for key in manifest["output_keys"]]
    other["created_at"] = "2098-01-01T00:00:00.000+00:00"
    return other


def test_a_batch_updates_its_models_index_once_with_every_entry():
    first = image_manifest()
    second = other_input(first, "second.png")
    s3 = CountingS3()
    writer = gallery.GalleryWriter(s3, SETTINGS)
    for manifest in (first, second):
        stored_manifest(s3, manifest)
        assert writer.write_page(manifest, objects_for(manifest))
    puts = len(s3.puts)

    writer.add_to_indexes([writer.listing(first), writer.listing(second)])

    assert s3.puts[puts:] == [INDEX] and s3.reads.count(INDEX) == 1
    listed = {entry["input"] for entry in gallery.read_entries(s3.objects[INDEX][0].decode())}
    assert listed == {first["results_prefix"].removeprefix("results/gradient/shapes/v1/").rstrip("/"),
                      second["results_prefix"].removeprefix("results/gradient/shapes/v1/").rstrip("/")}


def test_a_new_inputs_page_is_written_without_reads_and_never_over_a_newer_page():
    manifest = image_manifest()
    page_key = manifest["results_prefix"] + "index.html"
    s3 = CountingS3()
    writer = gallery.GalleryWriter(s3, SETTINGS)
    stored_manifest(s3, manifest)

    assert writer.write_page(manifest, objects_for(manifest), page_absent=True)
    assert s3.reads == [] and s3.puts == [page_key]

    # A newer attempt's manifest and page came first: the optimistic write is refused, the checked
    # rounds see the newer manifest, and its page stands.
    newer = copy.deepcopy(manifest)
    newer["attempt"] = "20990101T000000-ffffffff"
    stored_manifest(s3, newer)
    assert writer.write_page(newer, objects_for(newer))
    assert not writer.write_page(manifest, objects_for(manifest), page_absent=True)
    assert f"<code>{newer['attempt']}</code>" in s3.objects[page_key][0].decode()


def test_a_first_manifest_write_skips_its_read_and_falls_back_when_one_appeared():
    s3 = CountingS3()
    writer = ResultWriter(s3, SETTINGS)
    key = "results/gradient/shapes/v1/a.png/manifest.json"
    first = {"input": {"key": "a.png"}, "output_keys": ["old/1.png", "kept.png"]}

    assert writer.put_manifest(key, first, {SOURCE_ORDER: "s:01"}, seen_absent=True) == []
    assert s3.reads == []

    # Another writer's manifest appeared after this attempt's duplicate check: If-None-Match fails, the
    # compare-and-swap rounds read it, replace it and name its outputs for deletion.
    second = {"input": {"key": "a.png"}, "output_keys": ["new/1.png", "kept.png"]}
    assert writer.put_manifest(key, second, {SOURCE_ORDER: "s:02"}, seen_absent=True) == ["old/1.png"]
    assert json.loads(s3.objects[key][0]) == second and s3.reads == [key]


def test_error_records_of_a_batch_go_in_one_request():
    s3 = CountingS3()
    writer = ResultWriter(s3, SETTINGS)
    inputs = [f"incoming/gradient/shapes/v1/{i}.png" for i in range(3)]
    for key in inputs:
        writer.put_error(bucket="in", key=key, etag="e", family="gradient", error={"code": "x"}, retrying=True,
                         request_id=None)
    assert len(s3.objects) == 3

    writer.delete_errors(inputs)

    assert len(s3.deletes) == 1 and not s3.objects


def test_image_models_of_large_inputs_get_fewer_rows_per_model_call():
    from types import SimpleNamespace

    from explain_core.session import DEFAULT_BATCH_SIZE, ExplanationSession

    session = ExplanationSession("gradient", SETTINGS, s3_client=CountingS3())
    image = lambda side: SimpleNamespace(modality="image", input_height=side, input_width=side)  # noqa: E731
    assert session.batch_size_for(image(224)) == 16  # MobileNetV2: 32 and 64 ran at a third of 8-16's throughput
    assert session.batch_size_for(image(128)) == 49
    assert session.batch_size_for(image(1024)) == 1
    assert session.batch_size_for(image(8)) == DEFAULT_BATCH_SIZE
    assert session.batch_size_for(SimpleNamespace(modality="table", input_height=None, input_width=None)) \
        == DEFAULT_BATCH_SIZE

    # What a modality sees for a large image model: that batch size, and the session's own everything else.
    seen = session._for_model(SimpleNamespace(card=image(224)))
    assert seen.batch_size == 16 and session.batch_size == DEFAULT_BATCH_SIZE
    assert seen.explainers is session.explainers and seen.output_key == session.output_key
    assert session._for_model(SimpleNamespace(card=image(128))).batch_size == 49
