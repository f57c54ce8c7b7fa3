"""devtools.compare_results: manifests of two runs differ only in timings and ids, or the diff says where."""

import json

from devtools import compare_results

MANIFEST = {
    "status": "succeeded", "attempt": "20261201T170000-aaaaaaaa", "request_id": "r-1",
    "created_at": "2026-12-01T17:00:00.000+00:00", "timings": {"predict_s": 0.1},
    "model": {"name": "shapes", "loaded_from": "s3"},
    "predictions": [{"class_index": 0, "class_name": "circle", "score": 0.9}],
    "methods": [{"name": "Saliency", "seconds": 0.2, "outputs": [
        {"heatmap": "results/gradient/shapes/v1/jobs/" + "a" * 32 + "/x.png/attempts/20261201T170000-aaaaaaaa/"
                    "Saliency/0-circle.png"}]}],
}


def write(root, name, document):
    path = root / "results" / name / "manifest.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(document))


def rerun(document):
    """The same manifest from another run: other timings, ids, attempt and job."""
    text = json.dumps(document).replace("aaaaaaaa", "bbbbbbbb").replace("a" * 32, "c" * 32)
    again = json.loads(text)
    again.update(request_id="r-2", created_at="2026-12-01T18:00:00.000+00:00", timings={"predict_s": 0.3})
    again["model"]["loaded_from"] = "memory"
    again["methods"][0]["seconds"] = 0.5
    return again


def test_runs_that_differ_in_timings_and_ids_only_compare_identical(tmp_path, capsys):
    write(tmp_path / "before", "jobs/" + "a" * 32, MANIFEST)
    write(tmp_path / "after", "jobs/" + "c" * 32, rerun(MANIFEST))

    assert compare_results.main([str(tmp_path / "before"), str(tmp_path / "after")]) == 0
    assert "identical except timings and ids" in capsys.readouterr().out


def test_a_changed_score_is_reported_with_its_line(tmp_path, capsys):
    changed = rerun(MANIFEST)
    changed["predictions"][0]["score"] = 0.8
    write(tmp_path / "before", "one", MANIFEST)
    write(tmp_path / "after", "one", changed)

    assert compare_results.main([str(tmp_path / "before"), str(tmp_path / "after")]) == 1
    out = capsys.readouterr().out
    assert '-   "score": 0.9' in out and '+   "score": 0.8' in out


def test_a_manifest_missing_from_one_run_is_reported(tmp_path, capsys):
    write(tmp_path / "before", "one", MANIFEST)
    write(tmp_path / "before", "two", MANIFEST)
    write(tmp_path / "after", "one", MANIFEST)

    assert compare_results.main([str(tmp_path / "before"), str(tmp_path / "after")]) == 1
    assert "only before: results/two/manifest.json" in capsys.readouterr().out
