"""The cold-start probe on the emulator: a fresh process imports a light function's app.py and
invokes it twice with its event from events/; the API and the authorizer import no ML library."""

import pytest

from devtools.benchmark.cold_start import measure_function
from devtools.benchmark.harness import Harness
from devtools.benchmark.subjects import demo_subject


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    harness = Harness("WARNING", tmp_path_factory.mktemp("cold-start") / "functions.log")
    yield harness
    harness.close()


@pytest.mark.parametrize(("name", "expected"), [("authorizer", "Allow"), ("api", 200)])
def test_light_functions_answer_and_import_no_ml_stack(harness, name, expected):
    result = measure_function(harness, name, {}, demo_subject())

    assert result["first_status"] == expected and result["warm_status"] == expected, result
    assert 0 < result["warm_s"] and 0 < result["init_s"]
    imports = result["imports"]
    assert imports["init"]["explain_core"] > 0  # the probe saw app.py's own imports
    for phase in ("init", "first", "warm"):
        for group in ("TensorFlow", "Keras", "Xplique", "shap+numba"):
            assert imports.get(phase, {}).get(group, 0.0) == 0.0, (phase, group)
