"""The README's first command, as a user runs it (with --once so it stops after the samples)."""

import json
import os
import subprocess
import sys

from devtools.local.aws import free_port
from tests.conftest import REPO


def test_demo_explains_the_samples_and_copies_results(tmp_path):
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
    manifests = sorted(tmp_path.glob("results/*/*/v1/samples/*/manifest.json"))
    assert len(manifests) == 11
    for path in manifests:
        manifest = json.loads(path.read_text())
        assert manifest["status"] == "succeeded", path
        for key in manifest["output_keys"]:
            assert (tmp_path / key).stat().st_size > 0
    # The tabular results carry SHAP values, a summary and plots.
    csv_files = sorted(tmp_path.glob("results/shap/breast-cancer-*/v1/samples/*/attempts/*/*/*.values.csv"))
    assert len(csv_files) == 4  # TreeExplainer; Kernel, Deep and Gradient explainers
