"""Section ``cold-start``: what a fresh Lambda execution environment pays before and during its first
request, per function, and shap's numba compilation with and without the on-disk cache.

Per function (gradient, perturbation, shap, insights, api, authorizer), a fresh Python process
(``python -X importtime``) under the function's template environment, on this run's emulator:

1. ``import app`` of ``functions/<name>/app.py``: the module-level init Lambda runs before the
   first request (the INIT phase);
2. the first invocation with the function's event from ``events/`` (uploads of the demo model for
   the families, a job for insights, ``GET /models`` for the API, a key for the authorizer): for
   the families the manifest's timings split it into model load (``model_s``, from S3) and the
   explanation (the method's ``seconds``: first trace or numba compilation included);
3. a second, warm invocation of the same kind (another object, so nothing is served from a cache
   of results).

Import time is attributed to libraries from ``-X importtime``'s self times (TensorFlow with
tensorflow_probability, Keras, Xplique, shap with numba, pandas and scikit-learn, Powertools with
X-Ray, boto3 with botocore and the CRT, explain_core, numpy/scipy/PIL/matplotlib, pydantic, rest)
per phase: what init imports and what the first request imports (the ML stack is imported lazily,
on the first request that needs it).

Then shap's first Partition explanation in a fresh process (demo model, registry defaults): with an
empty numba cache directory (what every process paid before), with the cache the shap image builds
(``python -m explain_core.numba_cache``, built in this run into a temporary directory) and with the
cache plus compilation in the init phase (:func:`explain_core.numba_cache.precompile`). Times are
process CPU seconds (the machine is shared: wall time moves with the other load), with numba's cache
hits and the compiled signatures.

Lastly, import time of the shap function's module and of ``explain_core.shap_methods`` in this tree
vs a baseline commit's tree (``--cold-start-baseline``, extracted with ``git archive``), alternated
in one run.

The probe processes run this module as a script (``python -m devtools.benchmark.cold_start``), so its
module-level imports are the standard library only: they must not pre-import what is measured.
"""

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SECTION = "cold-start"
REPO = Path(__file__).resolve().parents[2]
#: Where import time goes: top-level package -> library group (first match wins; the rest is "other").
IMPORT_GROUPS = (
    ("TensorFlow", ("tensorflow", "tensorboard", "tf_keras", "absl", "google", "ml_dtypes", "opt_einsum", "gast",
                    "flatbuffers", "astunparse", "termcolor", "h5py", "grpc", "tensorflow_probability")),
    ("Keras", ("keras", "namex", "optree", "rich", "pygments", "markdown_it", "mdurl")),
    ("Xplique", ("xplique",)),
    ("shap+numba", ("shap", "numba", "llvmlite", "slicer", "cloudpickle", "tqdm", "xgboost")),
    ("pandas+sklearn", ("pandas", "sklearn", "joblib", "threadpoolctl", "pytz", "tzdata")),
    ("Powertools+X-Ray", ("aws_lambda_powertools", "aws_xray_sdk", "jmespath", "wrapt")),
    ("boto3", ("boto3", "botocore", "s3transfer", "awscrt", "_awscrt", "urllib3", "dateutil")),
    ("explain_core", ("explain_core", "app")),
    ("numpy/scipy/PIL/mpl", ("numpy", "scipy", "PIL", "matplotlib", "skimage", "cv2", "imageio", "networkx")),
    ("pydantic", ("pydantic", "pydantic_core", "annotated_types", "typing_extensions", "typing_inspection")),
)
GROUP_NAMES = tuple(name for name, _ in IMPORT_GROUPS) + ("other",)
#: Methods the family uploads ask for (one each, the family's most used; shap: the numba path).
DEFAULT_METHODS = "gradient=IntegratedGradients,perturbation=Occlusion,shap=PartitionExplainer"
#: Function directory -> its event in events/ (the families' events name the demo model shapes/v1).
EVENTS = {
    "gradient": "gradient-upload.json",
    "perturbation": "perturbation-upload.json",
    "shap": "shap-upload.json",
    "insights": "insights-upload.json",
    "api": "api-list-models.json",
    "authorizer": "api-authorizer-token.json",
}
#: The insights job the first and warm invocations plan (the e2e tier's: cheap feature visualizations).
INSIGHTS_JOB = {"title": "cold start", "seed": 7,
                "feature_visualization": {"objectives": [{"class": "circle"}], "steps": 8, "image_size": 32}}
PHASE_MARK = "cold-start-phase:"
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


# --------------------------------------------------------------------------- the probe (child process)


class ProbeContext:
    """The Lambda context attributes Powertools reads (a local stand-in, light to import)."""

    def __init__(self, name: str, memory: int, timeout: int):
        self.function_name = name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        self.aws_request_id = f"cold-start-{time.monotonic_ns()}"
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "cold-start"
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _mark(phase: str) -> None:
    # -X importtime writes to file descriptor 2 unbuffered: write the marks there too, in order.
    os.write(2, f"{PHASE_MARK}{phase}\n".encode())


def probe(spec_path: str, output: str) -> None:
    """Child process: import the function's app.py, invoke it twice; times go to ``output``."""
    import importlib.util

    spec = json.loads(Path(spec_path).read_text())
    os.environ.update(spec["environment"])
    clock, cpu = time.perf_counter, time.process_time
    result = {}
    _mark("init")
    started, started_cpu = clock(), cpu()
    module_spec = importlib.util.spec_from_file_location("app", spec["app"])
    app = importlib.util.module_from_spec(module_spec)
    sys.modules["app"] = app
    module_spec.loader.exec_module(app)
    result["init_s"], result["init_cpu_s"] = clock() - started, cpu() - started_cpu
    for phase, event in zip(("first", "warm"), spec["events"], strict=True):
        _mark(phase)
        context = ProbeContext(spec["name"], spec["memory"], spec["timeout"])
        started, started_cpu = clock(), cpu()
        with contextlib.redirect_stdout(sys.stderr):  # Powertools' logs and metrics: not the result
            response = app.lambda_handler(event, context)
        result[f"{phase}_s"], result[f"{phase}_cpu_s"] = clock() - started, cpu() - started_cpu
        result[f"{phase}_response"] = _summary(response)
    _mark("end")
    Path(output).write_text(json.dumps(result))


def _summary(response) -> dict:
    """What says whether an invocation worked: status code, failed batch items, an authorizer's effect."""
    if not isinstance(response, dict):
        return {"type": type(response).__name__}
    summary = {key: response[key] for key in ("statusCode", "batchItemFailures") if key in response}
    statements = (response.get("policyDocument") or {}).get("Statement") or []
    if statements:
        summary["effect"] = statements[0].get("Effect")
    return summary


def partition_probe(spec_path: str, output: str) -> None:
    """Child process: the first and a second PartitionExplainer call of a fresh process (demo model)."""
    spec = json.loads(Path(spec_path).read_text())
    os.environ.update(spec["environment"])
    cpu, clock = time.process_time, time.perf_counter
    import keras
    import numpy as np

    from explain_core import numba_cache
    from explain_core.attribution import build_explainer, run_method
    from explain_core.model_card import ModelCard
    from explain_core.registry import REGISTRY

    directory = Path(spec["model_dir"])
    card = ModelCard.model_validate_json((directory / "card.json").read_text())
    model = keras.saving.load_model(directory / "model.keras", compile=False, safe_mode=True)
    inputs = np.asarray(spec["inputs"], np.float32)
    targets = np.eye(len(card.class_names), dtype=np.float32)[spec["classes"]]
    method = REGISTRY["PartitionExplainer"]
    explainer = build_explainer(method, model, card, method.resolve({}, inputs.shape[1:3]), spec["batch_size"])
    explainer.outputs(inputs)  # TensorFlow's first trace: not numba's
    result = {}
    if spec["precompile"]:
        started = cpu()
        result["precompile"] = numba_cache.precompile()
        result["precompile_cpu_s"] = cpu() - started
    for phase in ("first", "second"):
        started, started_cpu = clock(), cpu()
        values = run_method(explainer, inputs, targets).attributions
        result[f"{phase}_s"], result[f"{phase}_cpu_s"] = clock() - started, cpu() - started_cpu
        result[f"{phase}_sum"] = float(np.asarray(values, np.float64).sum())
    result["cache_hits"] = sum(numba_cache.cache_hits().values())
    result["compiled_cached"] = {name: count for name, count in numba_cache.cache_misses().items() if count}
    result["numba"] = {key: value for key, value in numba_cache.state().items() if key != "cached"}
    Path(output).write_text(json.dumps(result))


def import_probe(spec_path: str, output: str) -> None:
    """Child process: seconds to import the shap function's module and explain_core.shap_methods."""
    import importlib
    import importlib.util

    spec = json.loads(Path(spec_path).read_text())
    os.environ.update(spec["environment"])
    clock = time.perf_counter
    started = clock()
    module_spec = importlib.util.spec_from_file_location("app", spec["app"])
    module_spec.loader.exec_module(importlib.util.module_from_spec(module_spec))
    app_s = clock() - started
    started = clock()
    importlib.import_module("explain_core.shap_methods")
    Path(output).write_text(json.dumps({"app_s": app_s, "shap_methods_s": clock() - started}))


# --------------------------------------------------------------------------- the parent (benchmark section)


def add_arguments(parser) -> None:
    parser.add_argument("--cold-start-functions", default=",".join(EVENTS),
                        help=f"functions to probe, comma-separated among {', '.join(EVENTS)}")
    parser.add_argument("--cold-start-methods", default=DEFAULT_METHODS,
                        help="family=method the family's uploads ask for (one per family)")
    parser.add_argument("--cold-start-partition-runs", type=int, default=2,
                        help="fresh processes per numba variant (alternated; 0 skips the numba table)")
    parser.add_argument("--cold-start-baseline", default="b859562",
                        help="commit whose tree the import-time comparison imports ('' skips it)")


def attribute_imports(stderr: str) -> dict[str, dict[str, float]]:
    """Self import seconds per library group per phase, from ``-X importtime`` lines between the marks."""
    phases: dict[str, dict[str, float]] = {}
    phase = None
    for line in stderr.splitlines():
        if line.startswith(PHASE_MARK):
            phase = line[len(PHASE_MARK):].strip()
            continue
        match = _IMPORT_LINE.match(line)
        if match and phase not in (None, "end"):
            group = group_of(match.group(4))
            counts = phases.setdefault(phase, dict.fromkeys(GROUP_NAMES, 0.0))
            counts[group] += int(match.group(1)) / 1e6
    return phases


def group_of(module: str) -> str:
    """The library group of a module name (IMPORT_GROUPS), "other" if none."""
    top = module.split(".")[0]
    return next((name for name, tops in IMPORT_GROUPS if top in tops), "other")


def python_path(layers_root: Path = REPO) -> str:
    """PYTHONPATH of a child process: the repository (devtools) and ``layers_root``'s explain_core."""
    return os.pathsep.join([str(REPO), str(layers_root / "layers/explain_core/src")])


def _run_child(mode: str, spec: dict, *, importtime: bool = False, timeout: float = 900) -> tuple[dict, str]:
    """(result, output) of ``python -m devtools.benchmark.cold_start mode SPEC --output FILE``."""
    from devtools.benchmark.children import run_child_process  # lazily: this module's imports stay light

    with tempfile.TemporaryDirectory(prefix="cold-start-") as scratch:
        spec_path = Path(scratch) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        child = run_child_process("devtools.benchmark.cold_start", [mode, str(spec_path)], None, timeout,
                                  env=spec.get("process_environment"),
                                  interpreter_args=("-X", "importtime") if importtime else ())
        if child.error or child.result is None:
            raise RuntimeError(f"{mode} probe failed ({child.error or 'no result'}): {child.output.strip()[-600:]}")
        return child.result, child.output


def _function_environment(harness, wiring) -> dict:
    from devtools.local.aws import aws_environment

    return {**wiring.environment, **aws_environment(harness.deployment.endpoint),
            "AWS_LAMBDA_FUNCTION_NAME": wiring.logical_id, "POWERTOOLS_TRACE_DISABLED": "true",
            "TF_CPP_MIN_LOG_LEVEL": "2"}


def _wiring(harness, name: str):
    return next(w for w in harness.deployment.functions.values() if w.module == f"functions.{name}.app")


def _s3_event(template: dict, key: str) -> dict:
    """The event's S3 notification re-pointed at ``key`` (the events name one object each)."""
    from urllib.parse import quote

    event = json.loads(json.dumps(template))
    record = event["Records"][0]
    body = json.loads(record["body"])
    body["Records"][0]["s3"]["object"]["key"] = quote(key, safe="")
    record["body"] = json.dumps(body)
    return event


def _prepare_events(harness, name: str, methods: dict, subject) -> tuple[list[dict], list[str]]:
    """The first and warm events of a function, with what they name uploaded; returns (events, input keys)."""
    from urllib.parse import unquote

    from devtools.local.events import deliver
    from devtools.samples import encode_image

    template = json.loads((REPO / "events" / EVENTS[name]).read_text())
    if name in ("api", "authorizer"):
        token = template.get("authorizationToken") or template["headers"]["Authorization"]
        harness.deployment.register_api_key(f"cold-start-{name}", token.removeprefix("Bearer ").strip())
        return [template, template], []
    original = unquote(json.loads(template["Records"][0]["body"])["Records"][0]["s3"]["object"]["key"]) \
        if "body" in template["Records"][0] else unquote(template["Records"][0]["s3"]["object"]["key"])
    stem, _, suffix = original.rpartition(".")
    keys = [f"{stem}-{harness.run_id}-{phase}.{suffix}" for phase in ("first", "warm")]
    bucket = harness.keys.settings.input_bucket
    if name == "insights":
        for key in keys:
            harness.s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(INSIGHTS_JOB).encode(),
                                  ContentType="application/json")
    else:
        images = subject.images(2)
        for key, pixels in zip(keys, images, strict=True):
            harness.s3.put_object(Bucket=bucket, Key=key, Body=encode_image(pixels), ContentType="image/png",
                                  Metadata={"methods": methods[name]})
    events = [_s3_event(template, key) for key in keys]
    if "body" not in template["Records"][0]:
        return events, keys
    return [deliver(event, harness.s3) for event in events], keys


def measure_function(harness, name: str, methods: dict, subject) -> dict:
    """One fresh process: init, first and warm invocation of ``functions/<name>/app.py``."""
    wiring = _wiring(harness, name)
    events, keys = _prepare_events(harness, name, methods, subject)
    spec = {"name": wiring.logical_id, "app": str(REPO / "functions" / name / "app.py"),
            "environment": _function_environment(harness, wiring), "memory": wiring.memory,
            "timeout": wiring.timeout, "events": events,
            "process_environment": {"PYTHONPATH": python_path()}}
    result, stderr = _run_child("probe", spec, importtime=True)
    result["imports"] = attribute_imports(stderr)
    result["method"] = methods.get(name)
    if keys and name != "insights":
        for phase, key in zip(("first", "warm"), keys, strict=True):
            manifest = harness.outcome(key)
            timings = manifest.get("timings") or {}
            seconds = [m.get("seconds") for m in manifest.get("methods", []) if m.get("seconds") is not None]
            result[f"{phase}_status"] = manifest.get("status")
            result[f"{phase}_model_s"] = timings.get("model_s")
            result[f"{phase}_explain_s"] = sum(seconds) if seconds else None
    else:
        for phase in ("first", "warm"):
            response = result.get(f"{phase}_response", {})
            result[f"{phase}_status"] = (response.get("effect") or response.get("statusCode")
                                         or ("failed" if response.get("batchItemFailures") else "succeeded"))
    return result


def build_numba_cache(directory: Path) -> dict:
    """The shap image's warm-up (functions/shap/Dockerfile) run into ``directory``."""
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(directory), "NUMBA_CPU_NAME": "generic",
                   "TF_CPP_MIN_LOG_LEVEL": "2",
                   "PYTHONPATH": python_path()}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "explain_core.numba_cache"], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=900, check=False)
    if done.returncode:
        raise RuntimeError(f"numba cache warm-up failed: {done.stderr.strip()[-600:]}")
    report = json.loads(done.stdout)
    report["build_s"] = time.perf_counter() - started
    report["files"] = sum(1 for path in directory.rglob("*") if path.is_file())
    report["bytes"] = sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())
    return report


def measure_partition(subject, runs: int, batch_size: int) -> dict:
    """First Partition call of fresh processes: empty numba cache, the image's cache, cache + init precompile."""
    import numpy as np

    from explain_core.attribution import to_model_input

    card, model = subject.card, subject.model()
    inputs = to_model_input(subject.images(2), card)
    classes = [int(c) for c in np.asarray(model.predict_on_batch(inputs)).argmax(axis=1)]
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as scratch:
        built = Path(scratch) / "image-cache"
        result = {"cache": build_numba_cache(built), "runs": {}}
        variants = {"no cache (compiles)": (None, False), "image cache": (built, False),
                    "image cache + init precompile": (built, True)}
        for run in range(runs):
            for label, (directory, precompile) in variants.items():
                # An empty directory for "no cache": numba compiles and writes there, as before the change.
                cache_dir = directory or Path(scratch) / f"empty-{run}"
                copy = Path(scratch) / f"copy-{run}-{len(result['runs'].get(label, []))}-{precompile}"
                if directory is not None:  # each process gets its own copy: none sees another's writes
                    import shutil

                    shutil.copytree(directory, copy)
                    cache_dir = copy
                environment = {"NUMBA_CACHE_DIR": str(cache_dir), "NUMBA_CPU_NAME": "generic",
                               "TF_CPP_MIN_LOG_LEVEL": "2"}
                spec = {"model_dir": str(subject.directory), "inputs": inputs.tolist(), "classes": classes,
                        "batch_size": batch_size, "precompile": precompile, "environment": environment,
                        "process_environment": {"PYTHONPATH": python_path()}}
                measured, _ = _run_child("partition", spec)
                result["runs"].setdefault(label, []).append(measured)
    return result


def measure_imports(harness, baseline: str, rounds: int = 3) -> dict:
    """Import seconds of functions/shap/app.py and explain_core.shap_methods: this tree vs ``baseline``'s."""
    with tempfile.TemporaryDirectory(prefix="cold-start-baseline-") as scratch:
        archive = subprocess.run(["git", "archive", baseline, "layers", "functions"], cwd=REPO, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", scratch], input=archive, check=True)
        trees = {"this tree": REPO, f"baseline {baseline}": Path(scratch)}
        samples: dict[str, list[dict]] = {label: [] for label in trees}
        for _ in range(rounds):
            for label, root in trees.items():
                spec = {"app": str(root / "functions" / "shap" / "app.py"),
                        "environment": _function_environment(harness, _wiring(harness, "shap")),
                        "process_environment": {"PYTHONPATH": python_path(root)}}
                samples[label].append(_run_child("imports", spec)[0])
    return {label: {key: min(s[key] for s in runs) for key in runs[0]} for label, runs in samples.items()}


def run(harness, args, results) -> dict:
    from devtools.benchmark.subjects import demo_subject
    from explain_core.registry import SHAP

    subject = demo_subject()
    harness.publish(subject)
    methods = dict(item.split("=", 1) for item in args.cold_start_methods.split(",") if "=" in item)
    section = {"functions": {}, "methods": methods}
    for name in [n.strip() for n in args.cold_start_functions.split(",") if n.strip()]:
        started = time.perf_counter()
        try:
            section["functions"][name] = measure_function(harness, name, methods, subject)
        except Exception as exc:  # report and go on
            section["functions"][name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        print(f"[cold-start] {name}: {time.perf_counter() - started:.1f} s", flush=True)
    if args.cold_start_partition_runs > 0:
        started = time.perf_counter()
        try:
            section["partition"] = measure_partition(subject, args.cold_start_partition_runs,
                                                     harness.session_batch_size(SHAP))
        except Exception as exc:
            section["partition"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        print(f"[cold-start] numba variants: {time.perf_counter() - started:.1f} s", flush=True)
    if args.cold_start_baseline:
        try:
            section["imports"] = measure_imports(harness, args.cold_start_baseline)
        except Exception as exc:
            section["imports"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    return section


def tables(section: dict, args) -> list[str]:
    from devtools.benchmark.report import Column, format_table
    from devtools.benchmark.timing import ratio

    out = []
    rows = [{"function": name, **data} for name, data in section.get("functions", {}).items()]
    out.append(format_table("Cold start per function (fresh process: import app, first and warm invocation)", [
        Column("function", lambda r: r["function"]),
        Column("init s", lambda r: r.get("init_s"), "{:.2f}"),
        Column("first s", lambda r: r.get("first_s"), "{:.2f}"),
        Column("model load s", lambda r: r.get("first_model_s"), "{:.2f}"),
        Column("first explain s", lambda r: r.get("first_explain_s"), "{:.2f}"),
        Column("warm s", lambda r: r.get("warm_s"), "{:.3f}"),
        Column("warm explain s", lambda r: r.get("warm_explain_s"), "{:.3f}"),
        Column("cold/warm", lambda r: ratio((r.get("init_s") or 0) + (r.get("first_s") or 0), r.get("warm_s")),
               "{:.0f}"),
        Column("first/warm", lambda r: ratio(r.get("first_s"), r.get("warm_s")), "{:.0f}"),
        Column("status", lambda r: r.get("error") or f"{r.get('first_status')}/{r.get('warm_status')} "
               f"{r.get('method') or ''}".strip()),
    ], rows, ["cold = init (import app) + first invocation; both in one fresh process per function, on the emulator.",
              "model load = the manifest's model_s (GET from S3 + Keras load); first explain includes the first",
              "TensorFlow trace (or numba compilation) of the method."]))
    groups = [g for g in GROUP_NAMES if any(r.get("imports", {}).get(p, {}).get(g, 0) >= 0.005
                                            for r in rows for p in ("init", "first"))]
    import_rows = [{"where": f"{r['function']} {phase}", **r["imports"][phase]}
                   for r in rows for phase in ("init", "first", "warm") if phase in r.get("imports", {})]
    out.append(format_table("Import seconds by library (-X importtime self times) per phase", [
        Column("function phase", lambda r: r["where"]),
        *[Column(group, lambda r, g=group: r.get(g), "{:.2f}") for group in groups],
        Column("total", lambda r: sum(r.get(g, 0.0) for g in GROUP_NAMES), "{:.2f}"),
    ], import_rows, ["init: module level of app.py (Lambda's INIT phase); first: imported lazily by the first request;",
                     "-X importtime adds its own overhead: compare groups, not absolute totals."]))
    partition = section.get("partition") or {}
    if partition.get("runs"):
        base = partition["runs"].get("no cache (compiles)", [])
        base_cpu = min((r["first_cpu_s"] for r in base), default=None)
        prow = []
        for label, runs in partition["runs"].items():
            best = min(runs, key=lambda r: r["first_cpu_s"])
            # Same attributions as the process that compiled everything (float32 rounding allowed).
            reference = base[0]["first_sum"] if base else best["first_sum"]
            prow.append({"variant": label, **best, "vs": ratio(best["first_cpu_s"], base_cpu),
                         "same": all(abs(r[key] - reference) <= 1e-4 * max(1.0, abs(reference))
                                     for r in runs for key in ("first_sum", "second_sum"))})
        cache = partition.get("cache", {})
        out.append(format_table("shap PartitionExplainer: first call of a fresh process and numba's cache", [
            Column("variant", lambda r: r["variant"]),
            Column("init precompile cpu s", lambda r: r.get("precompile_cpu_s"), "{:.2f}"),
            Column("first call cpu s", lambda r: r["first_cpu_s"], "{:.2f}"),
            Column("second call cpu s", lambda r: r["second_cpu_s"], "{:.3f}"),
            Column("first/no cache", lambda r: r["vs"], "{:.2f}"),
            Column("cache hits", lambda r: r["cache_hits"]),
            Column("compiled here (function x signatures)",
                   lambda r: " ".join(f"{n}x{c}" for n, c in r["compiled_cached"].items()) or "0"),
            Column("same values", lambda r: "yes" if r["same"] else "NO"),
        ], prow, [f"best of {len(base)} fresh processes per variant (CPU seconds: the machine is shared); demo model,",
                  "2 images, registry defaults. The cache: `python -m explain_core.numba_cache` (as the shap image's",
                  f"build runs it) took {cache.get('build_s', 0):.1f} s, {cache.get('files', 0)} files, "
                  f"{cache.get('bytes', 0) / 1e3:.0f} kB; not cacheable (compiled in every process): "
                  f"{', '.join(sorted(cache.get('skipped', {}))) or '-'}."]))
    elif partition.get("error"):
        out.append(f"shap numba cache: {partition['error']}\n")
    imports = section.get("imports") or {}
    if imports and "error" not in imports:
        irows = [{"tree": label, **values} for label, values in imports.items()]
        out.append(format_table("Import seconds of the shap function (fresh processes, best of 3, alternated)", [
            Column("tree", lambda r: r["tree"]),
            Column("import app s", lambda r: r["app_s"], "{:.3f}"),
            Column("then explain_core.shap_methods s", lambda r: r["shap_methods_s"], "{:.3f}"),
        ], irows, ["the baseline's layers/ and functions/ extracted with git archive; no -X importtime here."]))
    elif imports.get("error"):
        out.append(f"import comparison: {imports['error']}\n")
    return out


if __name__ == "__main__":
    # python -m devtools.benchmark.cold_start MODE SPEC --output FILE (devtools.benchmark.children.run_child_process)
    mode, spec_file, _, output_file = sys.argv[1:5]
    {"probe": probe, "partition": partition_probe, "imports": import_probe}[mode](spec_file, output_file)
