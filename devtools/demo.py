"""The main job, locally: upload -> queue -> function -> results, on a local S3/SQS emulator.

``python -m devtools.demo`` starts the emulator on loopback, wires it as template.yaml
describes, publishes the demo models, uploads sample images, patient tables and reviews, lets
the real handlers process the real SQS events, prints a summary table, copies the results to
./local-results/, then keeps watching the queues for your own uploads until Ctrl-C (``--once``
stops after the samples): one line per upload (status, prediction, local copy of its manifest
or error record), progress while a burst of uploads is worked through, and only that upload's
own results copied.

The console is for people: what the functions write (Powertools' JSON logs, EMF metrics,
TensorFlow's and absl's logs) goes to ./local-results/functions.log (the path is printed at start).

After the samples it calls the REST API's handlers in-process (authorizer, a synchronous
explanation, a job run by the queue); ``make local-api`` serves the API over HTTP with SAM.

``python -m devtools.demo upload IMAGE --family gradient`` uploads an image of yours to a
running demo; ``python -m devtools.demo upload rows.csv --family shap --model breast-cancer-xgb``
uploads a table to a tabular model; ``... upload reviews.jsonl --family gradient --model sentiment-lstm``
explains text.
"""

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from devtools import demo_model, insights_demo, tabular_demo, text_demo
from devtools.local import aws, lambda_service
from devtools.local.api_gateway import explain_event, rest_event
from devtools.local.lambda_service import NotifiedObject, SqsEventSource
from devtools.samples import encode_image
from explain_core import gallery
from explain_core.errors import InvalidKeyError, is_missing_object
from explain_core.keys import GALLERY_PAGE, KeyLayout
from explain_core.modalities import MODALITIES
from explain_core.registry import FAMILIES
from explain_core.settings import Settings

#: Held-out rows per tabular sample upload.
TABULAR_SAMPLE_ROWS = 8
#: Quality metrics the sample images ask for (docs/metrics.md): AverageStability is left out, it re-runs
#: every method 8 times (Rise: 16,000 more passes per image).
SAMPLE_METRICS = ("Deletion", "Insertion", "MuFidelity", "Sparseness")
#: Tokens per review and method in the demo's text summary.
TOP_TOKENS_SHOWN = 3
#: Short column names of the metrics table.
METRIC_ABBREVIATIONS = {"Deletion": "Del", "Insertion": "Ins", "MuFidelity": "MuF", "AverageStability": "Stab",
                        "Complexity": "Cplx", "Sparseness": "Spar"}
DEFAULT_PORT = int(os.environ.get("LOCAL_AWS_PORT", "5055"))
OUTPUT_DIR = Path(os.environ.get("DEMO_OUTPUT_DIR", "local-results"))
#: The functions' own output (JSON logs, metrics, TensorFlow's logs), under --output.
FUNCTIONS_LOG = "functions.log"
#: Seconds between rounds of watch mode while every queue is empty.
IDLE_SECONDS = 0.5


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def upload_samples(deployment) -> list[str]:
    """Held-out images for every family (PNG and JPEG), and held-out patient rows for the tabular models."""
    s3 = deployment.client("s3")
    bucket = deployment.bucket("InputBucket")
    images, labels, _ = demo_model.sample_images(6)
    uploads = []
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        image_format = "PNG" if i < 3 else "JPEG"
        name = f"{demo_model.shapes.CLASSES[label]}-{i}.{'png' if image_format == 'PNG' else 'jpg'}"
        body = encode_image(pixels, image_format)
        uploads.append((f"incoming/{FAMILIES[i % 2]}/{demo_model.NAME}/{demo_model.VERSION}/samples/{name}", body))
        if i < 3:  # one image per shape for the shap family (every image method runs on each)
            uploads.append((f"incoming/shap/{demo_model.NAME}/{demo_model.VERSION}/samples/{name}", body))
        if i < 2:  # the same model from a SageMaker model.tar.gz (a SavedModel)
            uploads.append((f"incoming/gradient/{demo_model.SAGEMAKER_NAME}/{demo_model.VERSION}/samples/{name}",
                            body))
    rows, _ = tabular_demo.sample_rows(TABULAR_SAMPLE_ROWS)
    uploads.append((f"incoming/shap/{tabular_demo.XGB}/{tabular_demo.VERSION}/samples/patients.csv",
                    tabular_demo.sample_csv(rows)))
    uploads.append((f"incoming/shap/{tabular_demo.MLP}/{tabular_demo.VERSION}/samples/patients.jsonl",
                    tabular_demo.sample_jsonl(rows)))
    # Reviews for the sentiment LSTM: one document (.txt) and several (.jsonl), through every family.
    samples = text_demo.sample_files()
    uploads.append((f"incoming/gradient/{text_demo.MODEL}/{text_demo.VERSION}/samples/review.txt",
                    samples["review.txt"]))
    for family in FAMILIES:
        uploads.append((f"incoming/{family}/{text_demo.MODEL}/{text_demo.VERSION}/samples/reviews.jsonl",
                        samples["reviews.jsonl"]))
    for key, body in uploads:
        image = key.split("/")[2] == demo_model.NAME  # the tabular models get no metrics (docs/metrics.md)
        s3.put_object(Bucket=bucket, Key=key, Body=body,
                      Metadata={"metrics": ",".join(SAMPLE_METRICS)} if image else {})
        log(f"uploaded s3://{bucket}/{key}")
    return [key for key, _ in uploads]


def outcome(s3, keys: KeyLayout, key: str, etag: str | None = None) -> dict | None:
    """The manifest or error record of an input key (``kind`` says which), once it exists.

    With ``etag`` (the uploaded object's, from its S3 notification), the document about that
    version of the input wins: a new upload that failed is not hidden by an older one's manifest.
    """
    candidates = [("error", keys.error_key(key))]
    family = key.removeprefix(keys.settings.input_prefix).split("/", 1)[0]
    with contextlib.suppress(InvalidKeyError):  # a key naming no model only gets an error record
        ref = keys.parse_input(keys.settings.input_bucket, key, family)
        candidates.insert(0, ("manifest", keys.manifest_key(ref)))
    found = []
    for kind, result_key in candidates:
        try:
            document = json.loads(s3.get_object(Bucket=keys.settings.results_bucket, Key=result_key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            continue
        found.append({"kind": kind, "key": result_key, **document})
        if etag is None or str((document.get("input") or {}).get("etag") or "").strip('"') == etag.strip('"'):
            return found[-1]
    return found[0] if found else None


def key_layout(deployment) -> KeyLayout:
    """The functions' key layout, for the local deployment's buckets."""
    return KeyLayout(Settings(input_bucket=deployment.bucket("InputBucket"),
                              results_bucket=deployment.bucket("ResultsBucket"),
                              model_bucket=deployment.bucket("ModelBucket")))


def process(sources: dict, s3, keys: KeyLayout, pending: set[str], timeout: float) -> dict:
    """Poll the family queues until every pending key has a manifest or an error record."""
    done, deadline = {}, time.monotonic() + timeout
    while pending - set(done) and time.monotonic() < deadline:
        for family, source in sources.items():
            started = time.perf_counter()
            count, response = source.poll_once()
            if count:
                failures = len(response.get("batchItemFailures", []))
                log(f"{family:>12}: invoked with {count} message(s) in {time.perf_counter() - started:.1f} s"
                    + (f", {failures} to retry" if failures else ""))
        for key in pending - set(done):
            found = outcome(s3, keys, key)
            if found:
                done[key] = found
    return done


def predicted(found: dict) -> str:
    """The manifest's prediction in a few words, as its modality says it (explain_core.modalities)."""
    return MODALITIES[found["model"]["modality"]].prediction_summary(found)


def summary_table(outcomes: dict) -> str:
    rows = [("input", "family", "model", "prediction", "methods", "outputs", "~s/input")]
    for key, found in outcomes.items():
        name = key.split("/", 4)[-1]
        family = key.split("/")[1]
        if found["kind"] == "error":
            error = found["error"]
            rows.append((name, family, "-", f"ERROR {error['code']}", error["message"][:40], "-", "-"))
            continue
        timings = found["timings"]
        seconds = sum(v for k, v in timings.items() if k.endswith("_s")) + sum(
            m.get("seconds", 0) for m in found["methods"]) / max(1, timings.get("batch_images", 1))
        rows.append((
            name, family, f"{found['model']['name']}/{found['model']['version']}",
            predicted(found),
            ",".join(m["name"] + ("" if m["status"] == "succeeded" else f"({m['status']})") for m in found["methods"]),
            str(len(found["output_keys"])) + f" in {found['results_prefix']}",
            f"{seconds:.1f}",
        ))
    return text_table(rows)


def text_table(rows: list[tuple[str, ...]]) -> str:
    """Rows of cells as aligned columns, the first row a header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def metrics_table(outcomes: dict) -> str | None:
    """Per family and method, each quality metric's mean over the samples it scored (None: no metrics).

    A metric's arrow says which way is better; a cell counts the maps it averages when some failed.
    """
    scores: dict[tuple[str, str], dict[str, list[float]]] = {}
    failed: dict[tuple[str, str], dict[str, int]] = {}
    better: dict[str, bool] = {}
    for found in outcomes.values():
        for method in found.get("methods", []) if found["kind"] == "manifest" else []:
            row = (found["family"], method["name"])
            for output in method.get("outputs", []):
                for name, metric in (output.get("metrics") or {}).items():
                    better[name] = metric["higher_is_better"]
                    if "score" in metric:
                        scores.setdefault(row, {}).setdefault(name, []).append(metric["score"])
                    else:
                        failed.setdefault(row, {})[name] = failed.get(row, {}).get(name, 0) + 1
    if not better:
        return None
    names = [n for n in METRIC_ABBREVIATIONS if n in better] + sorted(set(better) - set(METRIC_ABBREVIATIONS))
    header = ("family", "method", *(f"{METRIC_ABBREVIATIONS.get(n, n)} {'↑' if better[n] else '↓'}" for n in names),
              "maps")
    rows = [header]
    for row in sorted(set(scores) | set(failed), key=lambda r: (FAMILIES.index(r[0]), r[1])):
        cells = []
        for name in names:
            values, errors = scores.get(row, {}).get(name, []), failed.get(row, {}).get(name, 0)
            cell = f"{sum(values) / len(values):.2f}" if values else "-"
            cells.append(cell + (f" ({errors} failed)" if errors else ""))
        count = max((len(v) + failed.get(row, {}).get(n, 0) for n, v in scores.get(row, {}).items()), default=0)
        rows.append((*row, *cells, str(count)))
    return ("quality metrics, mean over the sample images (↑ higher is better, ↓ lower; docs/metrics.md)\n"
            + text_table(rows))


def tokens_table(outcomes: dict) -> str | None:
    """Per review: its predicted sentiment and, per method, the tokens with the largest attributions
    (signed: + supports the predicted class); None without text inputs."""
    found_rows = []
    for key, found in outcomes.items():
        if found["kind"] != "manifest" or found["model"]["modality"] != "text":
            continue
        name = key.rsplit("/", 1)[-1]
        documents = found["predictions"]["documents"]
        for order, method in enumerate(found["methods"]):
            family = (FAMILIES.index(found["family"]), order)
            if method["status"] == "failed":
                found_rows.append(((name, 0, *family), (name, "-", found["family"], method["name"],
                                                         f"FAILED {method['error']['code']}")))
            for output in method.get("outputs", []):
                document = documents[output["document"]]
                tokens = ", ".join(f"{token['text']} {token['value']:+.2f}"
                                   for token in output["top_tokens"][:TOP_TOKENS_SHOWN])
                found_rows.append(((name, document["line"], *family), (
                    f"{name}:{document['line']}", f"{document['class_name']} {document['score']:.2f}",
                    found["family"], method["name"], tokens)))
    if not found_rows:
        return None
    rows = [("review", "prediction", "family", "method", f"top {TOP_TOKENS_SHOWN} tokens (+ supports the class)")]
    rows += [row for _, row in sorted(found_rows)]
    return "reviews: predicted sentiment and the most attributed tokens per method (docs/text.md)\n" + text_table(rows)


def copy_outcome(s3, results_bucket: str, found: dict, destination: Path) -> list[Path]:
    """Copy one input's results to ``destination``: the outputs its manifest lists, then the
    manifest (or its error record alone). Nothing else is listed or copied: the manifest's
    ``output_keys`` say where the outputs are. Local outputs of the manifest this one replaced
    are removed, as the function removes them from the bucket."""
    root = destination.resolve()

    def local(key: str) -> Path | None:
        path = (root / key).resolve()
        return path if path.is_relative_to(root) else None  # a key with ../ stays out

    wanted = [*found.get("output_keys", []), found["key"]] if found["kind"] == "manifest" else [found["key"]]
    # The gallery pages (explain_core.gallery) are written just after the manifest: copied when there.
    pages = gallery_keys(found) if found["kind"] == "manifest" else []
    previous = local(found["key"]) if found["kind"] == "manifest" else None
    if previous and previous.is_file():
        with contextlib.suppress(ValueError, OSError):
            for key in set(json.loads(previous.read_text()).get("output_keys", [])) - set(wanted):
                stale = local(key)
                if stale:
                    stale.unlink(missing_ok=True)
                    for directory in stale.parents:  # the emptied attempt folders, up to the manifest's
                        if directory in (previous.parent, root) or any(directory.iterdir()):
                            break
                        directory.rmdir()
    copied = []
    for key in [*pages, *wanted]:  # the manifest last: copied[-1] is the input's local manifest
        target = local(key)
        if target is None:
            continue
        try:
            body = s3.get_object(Bucket=results_bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if key in pages and is_missing_object(exc):
                continue
            raise
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        copied.append(target)
    return copied


def gallery_keys(found: dict) -> list[str]:
    """The gallery pages of a manifest's input: its own page, beside the manifest, and its model's index."""
    folder = found["key"].rsplit("/", 1)[0] + "/"
    pages = [folder + GALLERY_PAGE]
    with contextlib.suppress(KeyError, TypeError):
        # The folder is <results/><family>/<model>/<version>/<input>/, and an input may have folders.
        model = f"{found['family']}/{found['model']['name']}/{found['model']['version']}/"
        if model in folder:
            pages.append(folder.split(model, 1)[0] + model + GALLERY_PAGE)
    return pages


def write_samples_page(outcomes: dict, output_dir: Path) -> Path:
    """``output_dir/index.html``: one page linking the local copy of each sample's gallery page
    (self-contained, like the pages it links: explain_core.gallery)."""
    entries = []
    for key, found in outcomes.items():
        if found["kind"] == "manifest":
            entry = gallery.index_entry(found, "")
        else:  # an error record: its JSON is the page
            error = found.get("error", {})
            entry = {"page": found["key"], "status": "failed", "prediction": f"{error.get('code')}: "
                     f"{error.get('message', '')[:80]}", "methods": [], "failed": [], "created_at": found.get("time")}
        entries.append({**entry, "input": key.removeprefix("incoming/")})
    page = output_dir / GALLERY_PAGE
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(gallery.links_page(
        "Explained samples", entries,
        note="Each input's page shows its image or table, predictions, every method's overlay or SHAP plots, "
             "times and parameters; results/<family>/<model>/<version>/index.html lists a model's recent inputs."),
        encoding="utf-8")
    return page


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (shorter to read)."""
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd()))
    return str(path)


@dataclass
class Burst:
    """Progress through the uploads that arrived since the queues were last empty."""

    started: float | None = None
    done: int = 0
    failed: int = 0

    def add(self, status: str, invoked_at: float) -> None:
        """Count one input, whose invocation started at ``invoked_at`` (time.perf_counter())."""
        if self.started is None:
            self.started = invoked_at
        self.done += 1
        self.failed += status.startswith("failed")

    def reset(self) -> None:
        self.started, self.done, self.failed = None, 0, 0

    def line(self, queued: int) -> str:
        seconds = time.perf_counter() - self.started if self.started is not None else 0
        rate = f", {self.done / seconds:.1f} inputs/s" if seconds > 0 else ""
        return f"progress: {self.done} done ({self.failed} failed), {queued} queued{rate}"


def queued(sources: dict) -> int:
    """Messages waiting in the family queues plus those in flight (received, not yet deleted)."""
    return sum(sum(source.backlog()) for source in sources.values())


def status_of(found: dict | None) -> str:
    """``succeeded``, ``partial (Method: code)``, ``failed code``, ``skipped (why)`` ..., from a manifest or an
    error record."""
    if found is None:
        return "no result"
    if found["kind"] == "error":
        error = found.get("error", {})
        note = " (dead-lettered)" if found.get("dead_lettered") else " (will retry)" if found.get("retrying") else ""
        return f"failed {error.get('code', '?')}{note}"
    notes = [f"{m['name']}: {(m.get('error') or {}).get('code', '?')}" for m in found.get("methods", [])
             if m.get("status") == "failed"]
    condition = found.get("condition") or {}
    if condition.get("reason"):  # an input the explanation condition left out: why
        notes.append(condition["reason"])
    elif condition.get("skipped"):  # a table's rows or a text's documents
        notes.append(f"{len(condition['skipped'])} of {condition.get('records', '?')} skipped by explain_if")
    return found.get("status", "?") + (f" ({', '.join(notes)})" if notes else "")


def seconds_since(event_time: str | None) -> float | None:
    """Seconds since an S3 event time (ISO 8601)."""
    with contextlib.suppress(TypeError, ValueError):
        return (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(event_time)).total_seconds()
    return None


def watch_once(sources: dict, s3, keys: KeyLayout, output_dir: Path, *, burst: Burst | None = None,
               echo=log, wait: bool = False) -> list[dict]:
    """One round of watch mode: poll every family's queue once (Lambda's event source mapping);
    after each invocation, read the outcome of each input its messages name, copy that input's
    results (only them) to ``output_dir``, and print one line per input (and the burst's progress).

    Returns one dict per input processed: key, family, status, outcome (manifest or error record,
    with ``kind`` and ``key``), local (its local copy), copied (paths), seconds (the invocation's),
    batch (inputs in it), latency (seconds from upload to now, when known).
    """
    processed = []
    for family, source in sources.items():
        batch = source.poll(wait=wait)
        if batch is None:
            continue
        invoked_at = time.perf_counter() - batch.seconds
        inputs: dict[str, NotifiedObject] = {}
        for obj in batch.objects:
            inputs[obj.key] = obj  # the last event of a key names its current version
        for key, obj in inputs.items():
            found = outcome(s3, keys, key, etag=obj.etag)
            copied = copy_outcome(s3, keys.settings.results_bucket, found, output_dir) if found else []
            result = {
                "key": key, "family": family, "status": status_of(found), "outcome": found, "copied": copied,
                "local": copied[-1] if copied else None, "seconds": batch.seconds, "batch": len(inputs),
                "latency": seconds_since(obj.event_time),
            }
            processed.append(result)
            if burst is not None:
                burst.add(result["status"], invoked_at)
            echo(input_line(result))
        if burst is not None and burst.done:
            waiting = queued(sources)
            if burst.done > 1:
                echo(burst.line(waiting))
            if not waiting:
                burst.reset()  # the queues are empty: the next upload starts a new burst
    return processed


def input_line(result: dict) -> str:
    """One line for people about one input: key, status, prediction, local copy, time taken."""
    found = result["outcome"]
    prediction = "-"
    if found and found["kind"] == "manifest":
        with contextlib.suppress(KeyError, IndexError, TypeError):
            prediction = predicted(found)
    local = display_path(result["local"]) if result["local"] else "(not copied)"
    took = f"{result['seconds']:.1f} s (batch of {result['batch']})"
    if result["latency"] is not None:
        took += f", {result['latency']:.1f} s after upload"
    return f"{result['key']}  {result['status']}  {prediction}  -> {local}  {took}"


def copy_results(s3, results_bucket: str, destination: Path) -> int:
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=results_bucket):
        for obj in page.get("Contents", []):
            target = destination / obj["Key"]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(results_bucket, obj["Key"], str(target))
            count += 1
    return count


@contextlib.contextmanager
def functions_logged_to(path: Path):
    """Send the functions' output (JSON logs, EMF metrics, TensorFlow's C++ and Python logs,
    warnings) to ``path`` while the demo runs; the console keeps the demo's own lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")  # one run's output; appended to below (file descriptor 2 writes to it too)
    with open(path, "a", buffering=1, encoding="utf-8") as stream:
        lambda_service.send_function_output_to(stream)
        try:
            yield stream
        finally:
            lambda_service.send_function_output_to(None)


def api_round_trip(deployment, sources: dict) -> bool:
    """The REST API through the same handlers, in-process: authorizer, a synchronous explanation,
    a job run by the queue, its status. (``make local-api`` serves it over HTTP with SAM.)"""
    import base64

    def invoke(logical_id: str, event: dict, handler=None) -> dict:
        wiring = deployment.functions[logical_id]
        handler = handler or lambda_service.load_handler(deployment, wiring)
        return lambda_service.invoke(deployment, wiring, handler, event)

    key = deployment.register_api_key("local-demo")
    policy = invoke("AuthorizerFunction", {"type": "TOKEN", "authorizationToken": f"Bearer {key}", "methodArn":
                    "arn:aws:execute-api:us-east-1:123456789012:local/v1/POST/explanations/gradient"})
    allowed = policy["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    log(f"API: authorizer {'allows' if allowed else 'DENIES'} the demo key (client {policy['principalId']})")

    def as_client(event: dict) -> dict:  # what API Gateway adds after an Allow
        event["requestContext"]["authorizer"] = {"principalId": policy["principalId"]}
        event["requestContext"]["requestTimeEpoch"] = int(time.time() * 1000)
        return event

    images, labels, _ = demo_model.sample_images(6)
    image = base64.b64encode(encode_image(images[5])).decode()
    started = time.perf_counter()
    response = invoke("GradientFunction", as_client(explain_event("gradient", {
        "model": {"name": demo_model.NAME, "version": demo_model.VERSION}, "methods": ["IntegratedGradients"],
        "input_base64": image, "filename": "api-sample.png"})), sources["gradient"].handler)
    seconds = time.perf_counter() - started
    result = json.loads(response["body"])
    sync_ok = response["statusCode"] == 200 and result["predictions"][0]["class_index"] == labels[5]
    if response["statusCode"] == 200:
        heatmap = result["methods"][0]["outputs"][0]["heatmap_url"].split("?")[0]
        log(f"API: POST /explanations/gradient -> 200 in {seconds:.2f} s, predicted "
            f"{result['predictions'][0]['class_name']}; heatmap (presigned) {heatmap}")
    else:
        log(f"API: POST /explanations/gradient -> {response['statusCode']} {response['body'][:300]}")

    rows, _ = tabular_demo.sample_rows(TABULAR_SAMPLE_ROWS)
    response = invoke("ShapFunction", as_client(explain_event("shap", {
        "model": {"name": tabular_demo.XGB, "version": tabular_demo.VERSION}, "methods": ["TreeExplainer"],
        "input_base64": base64.b64encode(tabular_demo.sample_csv(rows)).decode(), "filename": "api-rows.csv",
        "mode": "async"})), sources["shap"].handler)
    job = json.loads(response["body"])
    log(f"API: POST /explanations/shap (mode async) -> {response['statusCode']}, job {job.get('job_id')}")
    status = {}
    deadline = time.monotonic() + 120
    while response["statusCode"] == 202 and status.get("status") in (None, "queued") and time.monotonic() < deadline:
        sources["shap"].poll_once()
        job_path = f"/jobs/{job['job_id']}"
        status = json.loads(invoke("ApiFunction", as_client(rest_event(
            "GET", "/jobs/{job_id}", job_path, path_parameters={"job_id": job["job_id"]})))["body"])
    log(f"API: GET /jobs/{job.get('job_id')} -> {status.get('status')}")
    return allowed and sync_ok and status.get("status") == "succeeded"


def run(args) -> int:
    functions_log = args.output / FUNCTIONS_LOG
    with functions_logged_to(functions_log):
        log(f"the functions' logs (JSON lines, metrics, TensorFlow) go to {display_path(functions_log)}")
        return _run(args)


def _run(args) -> int:
    log(f"starting the local S3/SQS emulator on 127.0.0.1:{args.port}")
    try:
        server, endpoint = aws.start_emulator(port=args.port)
    except OSError as exc:
        log(f"cannot listen on 127.0.0.1:{args.port} ({exc}); set LOCAL_AWS_PORT to a free port")
        return 2
    deployment = aws.deploy(endpoint)
    log(f"wired from template.yaml: buckets {', '.join(deployment.buckets.values())}; "
        f"queues {', '.join(Path(u).name for u in deployment.queue_urls.values())}")
    log("preparing the demo models (trained on first run, about two minutes on 2 cores)")
    with lambda_service.captured_output():  # TensorFlow's start-up and training logs: to the functions' log
        model_dir = demo_model.ensure_demo_model()
        tabular_models = tabular_demo.ensure_tabular_models()
        text_dir = text_demo.build()
    training = json.loads((model_dir / "training.json").read_text())
    s3 = deployment.client("s3")
    demo_model.publish(s3, deployment.bucket("ModelBucket"), model_dir)
    log(f"published models/{demo_model.NAME}/{demo_model.VERSION}/ (held-out accuracy {training['test_accuracy']:.1%})")
    with lambda_service.captured_output():  # TensorFlow's export log
        demo_model.publish_sagemaker(s3, deployment.bucket("ModelBucket"))
    log(f"published models/{demo_model.SAGEMAKER_NAME}/{demo_model.VERSION}/model.tar.gz (the same model as a "
        "SageMaker training job writes it: a SavedModel)")
    for name, directory in tabular_models.items():
        tabular_demo.publish(s3, deployment.bucket("ModelBucket"), directory, name)
        accuracy = json.loads((directory / "training.json").read_text())["test_accuracy"]
        log(f"published models/{name}/{tabular_demo.VERSION}/ (held-out accuracy {accuracy:.1%})")

    text_demo.publish(s3, deployment.bucket("ModelBucket"))
    accuracy = json.loads((text_dir / "metrics.json").read_text())["accuracy"]
    log(f"published models/{text_demo.MODEL}/{text_demo.VERSION}/ (held-out accuracy {accuracy:.1%})")

    log("loading the functions (TensorFlow and Xplique import: a few seconds)")
    sources = {family: SqsEventSource(deployment, deployment.function_for_family(family)) for family in FAMILIES}
    keys = upload_samples(deployment)
    results_bucket = deployment.bucket("ResultsBucket")
    outcomes = process(sources, s3, key_layout(deployment), set(keys), timeout=args.timeout)
    missing = set(keys) - set(outcomes)
    print()
    print(summary_table({k: outcomes[k] for k in keys if k in outcomes}))
    quality = metrics_table({k: outcomes[k] for k in keys if k in outcomes})
    if quality:
        print()
        print(quality)
    reviews = tokens_table({k: outcomes[k] for k in keys if k in outcomes})
    if reviews:
        print()
        print(reviews)
    print()
    api_ok = api_round_trip(deployment, sources)
    print()
    insights_ok = insights_demo.demo_round(deployment, log, args.output, timeout=args.timeout)
    copied = copy_results(s3, results_bucket, args.output)
    log(f"copied {copied} result objects to {args.output}/")
    samples_page = write_samples_page({k: outcomes[k] for k in keys if k in outcomes}, args.output)
    log(f"the samples' gallery: open {display_path(samples_page)} in a browser")
    if missing or not api_ok or not insights_ok:
        log(f"ERROR: no result for {sorted(missing)} within {args.timeout:.0f} s" if missing else
            "ERROR: the API round trip failed (see above)" if not api_ok else
            "ERROR: the insights job did not succeed (see above)")
        server.stop()
        return 1
    if args.once:
        server.stop()
        return 0

    input_bucket = deployment.bucket("InputBucket")
    print(f"""
The emulator keeps running at {endpoint}. Explain your own image from another terminal:
  python -m devtools.demo upload my-image.jpg --family gradient
  python -m devtools.demo upload my-rows.csv --family shap --model {tabular_demo.XGB}
or with any S3 client, e.g. the AWS CLI (any credentials work locally):
  aws --endpoint-url {endpoint} s3 cp my-image.jpg s3://{input_bucket}/incoming/gradient/shapes/v1/my-image.jpg
Results appear under s3://{results_bucket}/results/ and in {args.output}/. Ctrl-C stops.
""", flush=True)
    layout, burst = key_layout(deployment), Burst()
    try:
        while True:
            if not watch_once(sources, s3, layout, args.output, burst=burst):
                time.sleep(IDLE_SECONDS)
    except KeyboardInterrupt:
        log("stopping")
    finally:
        server.stop()
    return 0


def upload(args) -> int:
    """Upload an image of the user's to the running demo."""
    endpoint = f"http://127.0.0.1:{args.port}"
    s3 = aws.client("s3", endpoint)
    key = f"incoming/{args.family}/{args.model}/{args.version}/{args.name or Path(args.image).name}"
    metadata = {name: value for name, value in (("methods", args.methods), ("params", args.params),
                                                ("target", args.target), ("metrics", args.metrics),
                                                ("metric-params", args.metric_params)) if value}
    for option in args.option or []:  # any other upload option (README, docs/outputs.md), as user metadata
        name, separator, value = option.partition("=")
        if not separator or not name.strip():
            raise SystemExit(f"--option needs KEY=VALUE, got {option!r}")
        metadata[name.strip().lower()] = value
    s3.upload_file(args.image, aws.local_name("InputBucket"), key, ExtraArgs={"Metadata": metadata})
    print(f"uploaded s3://{aws.local_name('InputBucket')}/{key}; results will be under "
          f"s3://{aws.local_name('ResultsBucket')}/results/{key.removeprefix('incoming/')}/")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="emulator port on 127.0.0.1")
    sub = parser.add_subparsers(dest="command")
    parser.add_argument("--once", action="store_true", help="stop after the sample images")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the samples")
    parser.add_argument("--output", type=Path, default=OUTPUT_DIR, help="local copy of the results")
    up = sub.add_parser("upload", help="upload an image to a running demo")
    up.add_argument("image")
    up.add_argument("--family", choices=FAMILIES, default="gradient")
    up.add_argument("--model", default=demo_model.NAME)
    up.add_argument("--version", default=demo_model.VERSION)
    up.add_argument("--methods", help="comma-separated methods (default: the model card's)")
    up.add_argument("--params", help='JSON, e.g. {"IntegratedGradients": {"steps": 32}}')
    up.add_argument("--target", help="class name or index to explain")
    up.add_argument("--metrics", help="quality metrics, comma-separated or all (docs/metrics.md)")
    up.add_argument("--metric-params", help='JSON, e.g. {"MuFidelity": {"nb_samples": 64}}')
    up.add_argument("--option", action="append", metavar="KEY=VALUE",
                    help="another upload option (S3 user metadata), e.g. polarity=signed; repeatable")
    up.add_argument("--name", help="file name of the upload (default: the file's own)")
    args = parser.parse_args(argv)
    return upload(args) if args.command == "upload" else run(args)


if __name__ == "__main__":
    sys.exit(main())
