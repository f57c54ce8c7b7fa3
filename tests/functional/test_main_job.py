"""The README's first command, as a user runs it (with --once so it stops after the samples)."""

import json
import os
import re
import subprocess
import sys

from devtools import demo_model, text_demo
from devtools.local.aws import free_port
from explain_core.registry import methods_of
from tests.conftest import REPO


def test_demo_explains_the_samples_and_copies_results(tmp_path, page_checker, artifacts_dir):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'layers/explain_core/src'}"}
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(name, None)  # the demo must set up its own emulator and credentials
    completed = subprocess.run(
        [sys.executable, "-m", "devtools.demo", "--once", "--port", str(free_port()), "--output", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    table = [line for line in completed.stdout.splitlines() if line.startswith("samples/")]
    images = [line for line in table if "shapes/v1" in line]
    tables = [line for line in table if "breast-cancer" in line]
    assert len(images) == 9 and len(tables) == 2  # 6 for gradient/perturbation, 3 for shap; 2 tables
    for line in images:
        name, family = line.split()[:2]
        assert family in ("gradient", "perturbation", "shap")
        # Each sample's file name starts with its true class; the summary shows the prediction.
        assert line.split()[3] == name.removeprefix("samples/").split("-")[0], line
    for line in tables:
        assert line.split()[1] == "shap" and " 8 rows: " in line and "failed" not in line, line
    # The same model from a SageMaker model.tar.gz (a SavedModel): two images, the gradient family.
    sagemaker = [line for line in table if f"{demo_model.SAGEMAKER_NAME}/v1" in line]
    assert len(sagemaker) == 2, table
    for line in sagemaker:
        name, family = line.split()[:2]
        assert family == "gradient" and line.split()[3] == name.removeprefix("samples/").split("-")[0], line
    texts = [line for line in table if text_demo.MODEL in line]
    assert len(texts) == 4  # review.txt (gradient) and reviews.jsonl through every family
    truth = text_demo.sample_truth()
    labels = [document["label"] for document in truth["reviews.jsonl"]]
    for line in texts:
        name, family = line.split()[:2]
        counts = f"{labels.count('negative')} negative, {labels.count('positive')} positive"
        expected = (f"{truth['review.txt'][0]['label']} (" if name.endswith(".txt")
                    else f"{len(labels)} documents: {counts}")
        assert expected in line and "failed" not in line, line
    # Under it, each review's predicted sentiment and its most attributed tokens, per method.
    reviews = completed.stdout.split("reviews: predicted sentiment and the most attributed tokens", 1)[1]
    rows = [line.split() for line in reviews.splitlines()[3:] if line.startswith(("review.txt:", "reviews.jsonl:"))]
    methods = {family: methods for family, methods in text_demo.card()["default_methods"].items()}
    assert len(rows) == 1 * len(methods["gradient"]) + len(labels) * sum(map(len, methods.values()))
    for row in rows:  # review:line, sentiment, score, family, method, tokens
        name, line = row[0].split(":")
        document = truth[name][[d["line"] for d in truth[name]].index(int(line))]
        assert row[1] == document["label"] and row[4] in methods[row[3]], row
    manifests = sorted(tmp_path.glob("results/*/*/v1/samples/*/manifest.json"))
    assert len(manifests) == 17
    for path in manifests:
        manifest = json.loads(path.read_text())
        assert manifest["status"] == "succeeded", path
        if manifest["model"]["name"] == demo_model.SAGEMAKER_NAME:
            assert [m["name"] for m in manifest["methods"]] == demo_model.SAGEMAKER_METHODS["gradient"]
            assert all(m["status"] == "succeeded" for m in manifest["methods"]), path
            (xrai,) = [m["outputs"][0] for m in manifest["methods"] if m["name"] == "XRAI"]
            assert (tmp_path / xrai["region_mask"]).stat().st_size > 0
        for method in manifest["methods"] if manifest["model"]["name"] == "shapes" else []:
            for output in method["outputs"]:  # the sample images ask for quality metrics (docs/metrics.md)
                assert sorted(output["metrics"]) == ["Deletion", "Insertion", "MuFidelity", "Sparseness"], path
                assert all("score" in metric for metric in output["metrics"].values()), output["metrics"]
        for key in manifest["output_keys"]:
            assert (tmp_path / key).stat().st_size > 0
    # Under the summary, each image method's mean quality metrics.
    quality = completed.stdout.split("quality metrics, mean over the sample images", 1)[1].splitlines()
    assert quality[1].split()[:6] == ["family", "method", "Del", "↓", "Ins", "↑"], quality[:3]
    assert {tuple(line.split()[:2]) for line in quality[3:14]} == {
        (family, method) for family, methods in demo_model.card()["default_methods"].items() for method in methods
    } | {("shap", spec.name) for spec in methods_of("shap") if "image" in spec.modalities}
    # The tabular results carry SHAP values, a summary and plots.
    csv_files = sorted(tmp_path.glob("results/shap/breast-cancer-*/v1/samples/*/attempts/*/*/*.values.csv"))
    assert len(csv_files) == 4  # TreeExplainer; Kernel, Deep and Gradient explainers
    # The samples' gallery: one local page linking each sample's own page, copied beside its manifest.
    assert f"open {tmp_path / 'index.html'} in a browser" in completed.stdout
    links = re.findall(r'<a href="([^"]+)">', (tmp_path / "index.html").read_text())
    assert sorted(tmp_path / link for link in links) == sorted(path.parent / "index.html" for path in manifests)
    for path in manifests:
        if text_demo.MODEL not in str(path):  # a text file's page shows highlighted words, not images
            assert "<img src=\"data:image/png;base64," in (path.parent / "index.html").read_text()
    assert (tmp_path / "results/gradient/shapes/v1/index.html").is_file()
    # In a real browser (docs/testing.md, Browser tests): the samples' page links every sample's page, and
    # each of those loads all its images with no console error; a screenshot of each under test-artifacts/.
    report = page_checker.check((tmp_path / "index.html").as_uri(), screenshot=artifacts_dir / "demo-samples.png")
    assert report.problems == [] and report.links == len(manifests) and not report.screenshot.blank
    pages = {}
    for path in manifests:
        name = "-".join(path.parent.relative_to(tmp_path / "results").parts).replace(".", "-")
        pages[name] = page_checker.check((path.parent / "index.html").as_uri(),
                                         screenshot=artifacts_dir / f"demo-{name}.png")
    assert {name: page.problems for name, page in pages.items() if page.problems} == {}
    assert all(page.requests == [page.url] for page in pages.values())
    assert all(len(page.images) > 1 for name, page in pages.items() if text_demo.MODEL not in name)
    check_insights(completed.stdout, tmp_path, page_checker, artifacts_dir)


def check_insights(stdout: str, output, page_checker, artifacts_dir) -> None:
    """The insights job of the main job: one line per part, the TCAV table, pictures that decode, a page that
    loads them."""
    from explain_core.insights import pictures

    planned = re.search(r"insights: planned (\d+) parts", stdout)
    assert planned, stdout[-3000:]
    parts = re.findall(r"insights: \[(\d+)/(\d+)\] (\w+) ", stdout)
    assert len(parts) == int(planned.group(1)) and {status for _, _, status in parts} == {"succeeded"}, parts
    assert "insights: job succeeded" in stdout
    table = stdout.split('TCAV of the concept "round"', 1)[1].splitlines()[2:4]
    significant = {line.split()[0]: line.split()[-1] for line in table}
    assert significant == {"circle": "yes", "square": "no"}, table
    listed = [line.split()[-1] for line in stdout.splitlines() if re.match(r"\[[\d:]+\]   /", line)]
    assert len(listed) >= 5
    for path in listed:
        image = pictures.decode_png(open(path, "rb").read())
        assert image.shape[0] > 100 and image.std() > 10, path
    page = output / "results/insights/shapes/v1/demo/index.html"
    report = page_checker.check(page.as_uri(), screenshot=artifacts_dir / "demo-insights.png")
    assert report.problems == [] and len(report.images) == len(listed) and not report.screenshot.blank
