"""Section ``cost``: what 1000 explanations cost on AWS, per method, on the demo model and on MobileNetV2.

One explanation is one image explained with one method for one class (the cards' target policy:
the predicted class), at the profile's parameters. Its cost is split into:

- Lambda compute: billed seconds of one invocation of the template's SQS ``BatchSize`` images
  (rounded up to 1 ms) x the function's ``MemorySize`` (and its ephemeral storage above 512 MB)
  x the price per GB-second of its architecture, divided by the images of the invocation;
- Lambda requests: one per invocation, so 1000 / BatchSize per 1000 explanations;
- S3 requests, COUNTED: every AWS API call of this process goes through
  ``botocore.client.BaseClient._make_api_call``, which
  :class:`devtools.benchmark.requests.RequestCounter` wraps while it is installed, tagging the
  calls made while a handler runs (``TimedHandler.around``). A warm invocation of BatchSize
  uploads is counted by operation, plus the user's upload PUTs;
- DynamoDB requests, counted the same way (the idempotency lock of ``explain_core.input_lock``),
  priced on demand in request units (writes of items under 1 KB, reads by their consistency);
- SQS requests: the S3 notifications' SendMessage (counted: messages delivered per upload, their
  size measured), and the Lambda poller's ReceiveMessage and DeleteMessageBatch per batch of
  BatchSize messages (modelled: the local event source is not Lambda's poller), each billed per
  64 KB chunk of payload.

Beside it, for tabular Kernel SHAP: the model rows evaluated per explained record, counted by
wrapping the explainer's model function, against SageMaker Clarify's documented synthetic
dataset size (:func:`clarify_synthetic_rows`).
"""

import contextlib
import dataclasses
import math
import time
import uuid
from dataclasses import dataclass

import numpy as np

from devtools import tabular_demo
from devtools.benchmark.harness import Harness
from devtools.benchmark.methods import measure_handler
from devtools.benchmark.report import Column, format_table
from devtools.benchmark.requests import RequestCounter, operation_counts
from devtools.benchmark.subjects import SUBJECTS, Subject, profile_of, profile_overrides
from devtools.benchmark.timing import CountingForward
from devtools.local import aws
from explain_core.attribution import build_explainer
from explain_core.model_card import ModelCard
from explain_core.registry import REGISTRY, SHAP, MethodSpec

SECTION = "cost"


@dataclass(frozen=True)
class Prices:
    """AWS list prices, us-east-1, on-demand, without any free tier (none is deducted in the figures).

    Taken on 2026-12-02 from stored copies of the public pricing pages (this machine has no
    internet; the ``search`` tool's docs/pages corpora), each checked against at least two sources.
    """

    region: str = "us-east-1"
    taken: str = "2026-12-02"
    #: aws.amazon.com/lambda/pricing (first tier, up to 6 billion GB-s a month): x86 $0.0000166667 per
    #: GB-second; AWS's whitepaper "How AWS Pricing Works" rounds it to $0.00001667.
    lambda_x86_gb_second: float = 0.0000166667
    #: The same page, Arm (Graviton2) first tier; used only if the template says arm64.
    lambda_arm_gb_second: float = 0.0000133334
    #: aws.amazon.com/lambda/pricing and the AWS whitepaper: $0.20 per 1M requests.
    lambda_request: float = 0.20 / 1e6
    #: Lambda ephemeral storage above the free 512 MB, x86, per GB-second. NOT confirmed here: the stored
    #: pricing page shows the rule but not the figure; $0.0000000309 is the list price as last known.
    lambda_ephemeral_gb_second: float = 0.0000000309
    #: aws.amazon.com/s3/pricing, S3 Standard: $0.005 per 1,000 PUT, COPY, POST, LIST requests (the
    #: stored page renders its price cells as templates; figure confirmed by c3x.dev "S3 request fees
    #: explained" and cloudkaramchari.com). DELETE and CANCEL requests are free.
    s3_tier1_request: float = 0.005 / 1000
    #: Same sources: $0.0004 per 1,000 GET, SELECT and all other requests (HEAD included).
    s3_tier2_request: float = 0.0004 / 1000
    #: aws.amazon.com/sqs/pricing, standard queues, first 100 billion requests a month after the free
    #: million: $0.40 per 1M requests; each 64 KB chunk of a payload is billed as one request
    #: (confirmed by cloudburn.io "Amazon SQS Pricing" March 2026 and unanswered.io).
    sqs_request: float = 0.40 / 1e6
    sqs_chunk_bytes: int = 64 * 1024
    #: aws.amazon.com/dynamodb/pricing/on-demand, Standard table class, after the November 2024 cut:
    #: $0.625 per million write request units, $0.125 per million read request units (figures from
    #: airbyte.com "DynamoDB pricing" 2025 and a repository reading the AWS Price List API; the
    #: stored AWS page gives the unit rules, not the figures). A write of up to 1 KB is one unit; a
    #: strongly consistent read of up to 4 KB one unit, an eventually consistent one half.
    dynamodb_write_unit: float = 0.625 / 1e6
    dynamodb_read_unit: float = 0.125 / 1e6


PRICES = Prices()

#: S3 operations billed as tier 1 (PUT, COPY, POST, LIST) and free ones (DELETE, CANCEL); every other
#: S3 operation (GET, HEAD, SELECT, ...) is tier 2 ("GET, SELECT, and all other requests").
S3_TIER1 = frozenset({
    "PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy",
    "CompleteMultipartUpload", "ListObjects", "ListObjectsV2", "ListObjectVersions", "ListMultipartUploads",
    "ListParts", "ListBuckets", "PostObject", "RestoreObject",
})
S3_FREE = frozenset({"DeleteObject", "DeleteObjects", "AbortMultipartUpload"})
#: DynamoDB operations that write an item (billed in write request units).
DYNAMODB_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem"})
#: Messages per SQS ReceiveMessage / DeleteMessageBatch call (the API's maximum).
SQS_MESSAGES_PER_CALL = 10


def s3_tier(operation: str) -> int:
    """1 for PUT/COPY/POST/LIST requests, 2 for GET/HEAD and every other request, 0 for free ones."""
    if operation in S3_FREE:
        return 0
    return 1 if operation in S3_TIER1 else 2


def sqs_billed(payload_bytes: int, prices: Prices = PRICES) -> int:
    """Billed SQS requests of one API call: one per started 64 KB chunk of its payload (at least one)."""
    return max(1, math.ceil(payload_bytes / prices.sqs_chunk_bytes))


def poller_requests(batch: int, message_bytes: float, prices: Prices = PRICES) -> dict:
    """Billed SQS requests of Lambda's poller for one batch of ``batch`` messages of ``message_bytes``.

    Modelled, not counted: ReceiveMessage returns at most 10 messages a call, each call billed per
    64 KB of the messages it returns; the messages of a successful batch are deleted with one
    DeleteMessageBatch per 10 (receipt handles only: one chunk). Empty long polls of an idle queue
    are a fixed cost per queue, not per explanation, and are left out.
    """
    calls = math.ceil(batch / SQS_MESSAGES_PER_CALL)
    receive = 0
    for call in range(calls):
        in_call = min(SQS_MESSAGES_PER_CALL, batch - call * SQS_MESSAGES_PER_CALL)
        receive += sqs_billed(math.ceil(in_call * message_bytes), prices)
    return {"receive": receive, "delete": calls}


# --------------------------------------------------------------------------- the cost formula


@dataclass(frozen=True)
class Usage:
    """What one explanation uses, as measured; :func:`cost_per_thousand` prices it."""

    invocation_s: float  # handler seconds of one invocation of ``batch`` images
    batch: int  # explanations per invocation (the template's SQS BatchSize)
    memory_mb: int
    ephemeral_mb: int = 512  # /tmp size; the first 512 MB are free
    architecture: str = "x86_64"
    s3_tier1: float = 0.0  # requests per explanation
    s3_tier2: float = 0.0
    sqs_requests: float = 0.0  # billed SQS requests (64 KB chunks) per explanation
    dynamodb_write_units: float = 0.0
    dynamodb_read_units: float = 0.0


def cost_per_thousand(usage: Usage, prices: Prices = PRICES) -> dict:
    """Dollars per 1000 explanations, by part, and the total.

    Lambda bills each invocation's duration rounded up to 1 ms, at MemorySize / 1024 GB;
    1000 explanations take 1000 / batch invocations (full batches).
    """
    invocations = 1000 / usage.batch
    billed_s = math.ceil(round(usage.invocation_s * 1000, 6)) / 1000
    gb_seconds = invocations * billed_s * usage.memory_mb / 1024
    gb_price = prices.lambda_arm_gb_second if usage.architecture == "arm64" else prices.lambda_x86_gb_second
    ephemeral_gb_seconds = invocations * billed_s * max(0, usage.ephemeral_mb - 512) / 1024
    parts = {
        "lambda_compute": gb_seconds * gb_price + ephemeral_gb_seconds * prices.lambda_ephemeral_gb_second,
        "lambda_requests": invocations * prices.lambda_request,
        "s3": 1000 * (usage.s3_tier1 * prices.s3_tier1_request + usage.s3_tier2 * prices.s3_tier2_request),
        "sqs": 1000 * usage.sqs_requests * prices.sqs_request,
        "dynamodb": 1000 * (usage.dynamodb_write_units * prices.dynamodb_write_unit
                            + usage.dynamodb_read_units * prices.dynamodb_read_unit),
    }
    return {**parts, "total": sum(parts.values()), "invocations": invocations, "gb_seconds": gb_seconds}


def clarify_synthetic_rows(features: int, baseline_rows: int, number_of_samples: int | None = None) -> int:
    """Model rows SageMaker Clarify evaluates to explain one record with Kernel SHAP.

    "Synthetic dataset size = SHAP baseline size * n_samples", with n_samples =
    MIN(NumberOfSamples, 2^n_features - 2), or MIN(2*n_features + 2^11, 2^n_features - 2) when
    NumberOfSamples is not given ("a tabular record with 10 features has a SHAP baseline size of 1
    ... the synthetic dataset contains 1022 records"): Amazon SageMaker AI developer guide,
    https://docs.aws.amazon.com/sagemaker/latest/dg/clarify-online-explainability-create-endpoint-synthetic.html
    """
    coalitions = 2 ** features - 2
    requested = number_of_samples if number_of_samples is not None else 2 * features + 2 ** 11
    return baseline_rows * min(requested, coalitions)


# --------------------------------------------------------------------------- the function's billing settings


def billing_settings(harness: Harness, family: str) -> dict:
    """MemorySize, BatchSize, architecture and /tmp size of the family's function, from template.yaml now.

    MemorySize and BatchSize as the emulator's deployment read them when the benchmark started;
    the architecture and EphemeralStorage read from the template (a ``!Ref`` resolves to the
    parameter's default, as ``sam deploy`` without overrides would).
    """
    wiring = harness.deployment.function_for_family(family)
    template = aws.load_template()
    defaults = template.get("Globals", {}).get("Function", {})
    properties = template["Resources"][wiring.logical_id]["Properties"]

    def setting(name, default):
        value = properties.get(name, defaults.get(name, default))
        if isinstance(value, dict) and "Ref" in value:
            value = template["Parameters"][value["Ref"]]["Default"]
        return value

    ephemeral = setting("EphemeralStorage", {"Size": 512})
    size = ephemeral.get("Size", 512) if isinstance(ephemeral, dict) else ephemeral
    if isinstance(size, dict) and "Ref" in size:
        size = template["Parameters"][size["Ref"]]["Default"]
    return {"function": wiring.logical_id, "memory_mb": wiring.memory, "batch": wiring.batch_size,
            "architecture": setting("Architectures", ["x86_64"])[0], "ephemeral_mb": int(size)}


# --------------------------------------------------------------------------- one method's requests


@contextlib.contextmanager
def fresh_keys(harness: Harness):
    """Uploads under a prefix of their own while inside.

    ``measure_handler`` names its uploads after the phase and the method, so a second pass over a
    method (the methods section's, then this one) would upload the same keys: with the same bytes
    the handler recognises duplicates and skips them (4 requests instead of ~10 per image), with
    other bytes it replaces an explained version; neither is what a new upload costs.
    """
    saved = harness.run_id
    harness.run_id = f"{saved}-cost-{uuid.uuid4().hex[:6]}"
    try:
        yield
    finally:
        harness.run_id = saved


def counted_pass(harness: Harness, subject: Subject, spec: MethodSpec, overrides: dict, batch: int,
                 counter: RequestCounter) -> dict:
    """A warm invocation of ``batch`` uploads through ``measure_handler``, its API calls counted.

    ``measure_handler`` uploads images for a warm-up invocation, then for the timed one; the
    counts of the handler are those of the timed invocation; the user's requests (its billed S3
    calls on the input bucket) and the notifications are those of every upload, per uploaded key.
    """
    handler = harness.handler(spec.family)
    images = subject.images(batch)
    first = len(counter.calls)
    handler.around.append(counter.invocation)
    try:
        with fresh_keys(harness):
            measured = measure_handler(harness, subject, spec, overrides, images, repeats=1)
    finally:
        handler.around.remove(counter.invocation)
    calls = counter.calls[first:]
    timed = [call for call in calls if call.invocation == counter.last_invocation]
    outside = [call for call in calls if call.invocation is None]
    input_bucket = harness.keys.settings.input_bucket
    queue_url = harness.deployment.queue_urls[harness.deployment.function_for_family(spec.family).queue]
    upload_calls = [c for c in outside if c.service == "s3" and c.target == input_bucket and s3_tier(c.operation)]
    uploads = len({c.key for c in upload_calls if c.operation == "PutObject"})
    notified = dict(m for c in outside if c.operation == "ReceiveMessage" and c.target == queue_url for m in c.messages)
    return {"measured": measured, "handler_calls": timed, "upload_puts": len(upload_calls) / uploads,
            "notifications": len(notified) / uploads,
            "notification_bytes": float(np.mean(list(notified.values()))) if notified else None,
            "bytes_written": sum(c.request_bytes for c in timed if c.operation == "PutObject")}


def per_explanation(pass_result: dict, batch: int, prices: Prices = PRICES) -> dict:
    """Requests per explanation from a counted pass: the handler's (per image of its batch) and the user's."""
    calls = pass_result["handler_calls"]
    s3 = [c for c in calls if c.service == "s3"]
    dynamo = [c for c in calls if c.service == "dynamodb"]
    handler_sqs = [c for c in calls if c.service == "sqs"]
    message_bytes = pass_result["notification_bytes"] or 0
    notifications = pass_result["notifications"]
    poller = poller_requests(batch, message_bytes, prices)
    item_bytes = max((c.item_bytes for c in dynamo), default=0)
    write_units = max(1, math.ceil(item_bytes / 1024))
    sqs = {
        "notification_send": notifications * sqs_billed(math.ceil(message_bytes), prices),
        "poller_receive": poller["receive"] / batch,
        "poller_delete": poller["delete"] / batch,
        "handler": sum(sqs_billed(c.request_bytes, prices) for c in handler_sqs) / batch,
    }
    return {
        "s3_tier1": pass_result["upload_puts"] + sum(s3_tier(c.operation) == 1 for c in s3) / batch,
        "s3_tier2": sum(s3_tier(c.operation) == 2 for c in s3) / batch,
        "s3_free": sum(s3_tier(c.operation) == 0 for c in s3) / batch,
        "upload_puts": pass_result["upload_puts"],
        # A write of up to 1 KB is one unit; updates and deletes are billed on the item's size too,
        # taken as the largest item this pass put (the lock's record).
        "dynamodb_write_units": sum(c.operation in DYNAMODB_WRITES for c in dynamo) * write_units / batch,
        "dynamodb_item_bytes": item_bytes,
        "dynamodb_read_units": sum(c.read_units for c in dynamo) / batch,
        "sqs": sqs, "sqs_requests": sum(sqs.values()),
        "operations": {name: count / batch for name, count in operation_counts(calls).items()},
        "kb_written": pass_result["bytes_written"] / batch / 1024,
        "notification_bytes": message_bytes,
    }


def methods_row(results: dict, subject: Subject, spec: MethodSpec) -> dict | None:
    """The ``methods`` section's row for this model and method, if it ran and succeeded in this run."""
    for row in results.get("methods") or []:
        if row.get("model") == subject.key and row.get("method") == spec.name:
            return row if row.get("handler_s") and not row.get("error") else None
    return None


def cost_row(harness: Harness, subject: Subject, spec: MethodSpec, args, results: dict,
             counter: RequestCounter) -> dict:
    """One method on one model: its duration, its counted requests and its cost per 1000 explanations."""
    billing = billing_settings(harness, spec.family)
    batch = billing["batch"]
    profile = profile_of(subject, args)
    overrides = profile_overrides(spec, profile, subject.input_size, args.params)
    row = {"model": subject.key, "method": spec.name, "family": spec.family, "profile": profile,
           "params": spec.resolve(overrides, subject.input_size), **billing}
    reused = None if args.cost_own_timing else methods_row(results, subject, spec)
    if reused is not None:
        # Durations from the methods section; the requests counted on a pass at the quick parameters
        # (how many objects are read and written does not depend on sample counts, and it is cheap).
        count_overrides = profile_overrides(spec, "quick", subject.input_size, args.params)
        row["invocation_s"] = reused["handler_s"] * batch
        row["duration_source"] = f"methods: {reused['images']}-image invocations, scaled to {batch}"
    else:
        count_overrides = overrides
    counted = counted_pass(harness, subject, spec, count_overrides, batch, counter)
    row["count_params"] = spec.resolve(count_overrides, subject.input_size)
    row["error"] = counted["measured"]["error"]
    if reused is None:
        row["invocation_s"] = counted["measured"]["handler_s"]
        row["duration_source"] = f"measured: one {batch}-image invocation"
    row["s_per_explanation"] = row["invocation_s"] / batch
    row["requests"] = per_explanation(counted, batch)
    if row["error"] is None:
        requests = row["requests"]
        usage = Usage(row["invocation_s"], batch, billing["memory_mb"], billing["ephemeral_mb"],
                      billing["architecture"], requests["s3_tier1"], requests["s3_tier2"], requests["sqs_requests"],
                      requests["dynamodb_write_units"], requests["dynamodb_read_units"])
        row["cost"] = cost_per_thousand(usage)
    return row


# --------------------------------------------------------------------------- Kernel SHAP model rows


class RowCountingOutputs:
    """Stands in for a SHAP explainer's model function (``ShapMethod.outputs``), counting the rows it scores."""

    def __init__(self, outputs):
        self.forward = CountingForward(outputs)

    def __call__(self, x):
        return self.forward(x)

    def one_class(self, cls: int):
        return lambda x: self(x)[:, cls]

    @property
    def rows(self) -> int:
        return sum(self.forward.sizes)

    @property
    def calls(self) -> int:
        return len(self.forward.sizes)

    def reset(self) -> None:
        self.forward.reset()


def count_kernel_rows(model, card: ModelCard, background: np.ndarray, records: np.ndarray, batch_size: int,
                      nb_samples: int | None) -> dict:
    """Model rows our KernelExplainer scores per record (warm: its shap explainer already built).

    The first call builds shap's KernelExplainer, which scores the background once (its expected
    value); later calls reuse it (the background is fixed), so a warm record costs
    coalitions x background rows + 1 (the record itself).
    """
    spec = REGISTRY["KernelExplainer"]
    params = spec.resolve({} if nb_samples is None else {"nb_samples": nb_samples}, (0, 0))
    explainer = build_explainer(spec, model, card, params, batch_size, background)
    counting = RowCountingOutputs(explainer.outputs)
    explainer.outputs = counting
    targets = np.zeros((len(records), len(card.class_names)), np.float32)
    targets[:, card.default_explained_classes()[0]] = 1.0
    explainer.explain(records, targets)
    first_rows = counting.rows
    counting.reset()
    explainer.explain(records, targets)
    rows = counting.rows / len(records)
    features, background_rows = records.shape[1], len(background)
    return {"features": features, "background_rows": background_rows, "nb_samples": params["nb_samples"],
            "rows_per_record": rows, "coalitions": (rows - 1) / background_rows,
            "all_coalitions": 2 ** features - 2, "first_call_extra_rows": first_rows - counting.rows,
            "calls_per_record": counting.calls / len(records)}


def ten_feature_table():
    """A 10-feature table: the breast cancer data's ten "mean" measurements, an MLP built like the demo's.

    Its weights are left as initialised: the rows Kernel SHAP scores depend on the features, the
    baseline and nb_samples, not on what the model predicts. The baseline is one row, the
    training mean (Clarify's one-row baseline).
    """
    import keras

    data = tabular_demo.dataset()
    x_train = np.asarray(data["x_train"][:, :10])
    keras.utils.set_random_seed(tabular_demo.SEED)
    model = tabular_demo.build_mlp(x_train)
    card = ModelCard.model_validate({**tabular_demo.card(tabular_demo.MLP),
                                     "name": "breast-cancer-mean-10", "feature_names": data["feature_names"][:10]})
    return model, card, x_train.mean(axis=0, keepdims=True), np.asarray(data["x_test"][:, :10])


def benchmark_kernel_rows(harness: Harness, args) -> list[dict]:
    """Model rows per explained record: the breast-cancer MLP (30 features) and a 10-feature table."""
    from devtools.benchmark.tabular import load_tabular

    batch = harness.session_batch_size(SHAP)
    count = args.cost_kernel_records
    directories = tabular_demo.ensure_tabular_models()
    card, model, background = load_tabular(tabular_demo.MLP, directories[tabular_demo.MLP])
    records = tabular_demo.sample_rows(count)[0]
    rows = []
    for nb_samples in (None, clarify_n_samples(records.shape[1])):
        rows.append({"table": f"{tabular_demo.MLP} (30 features, background.npy)",
                     **count_kernel_rows(model, card, background, records, batch, nb_samples)})
    model10, card10, baseline, test10 = ten_feature_table()
    for nb_samples in (None, 2 ** 10 - 2, clarify_n_samples(10)):
        rows.append({"table": "10 mean features, one-row baseline (training mean)",
                     **count_kernel_rows(model10, card10, baseline, test10[:count], batch, nb_samples)})
    for row in rows:
        row["default"] = row["nb_samples"] == REGISTRY["KernelExplainer"].resolve({}, (0, 0))["nb_samples"]
        row["clarify_rows"] = clarify_synthetic_rows(row["features"], row["background_rows"])
        print(f"[cost] Kernel SHAP {row['table']}: nb_samples={row['nb_samples']}: "
              f"{row['rows_per_record']:.0f} rows/record (Clarify: {row['clarify_rows']})", flush=True)
    return rows


def clarify_n_samples(features: int) -> int:
    """Clarify's n_samples when NumberOfSamples is not given: 2 x features + 2^11 (before the 2^M - 2 cap)."""
    return 2 * features + 2 ** 11


# --------------------------------------------------------------------------- the section


def add_arguments(parser) -> None:
    parser.add_argument("--cost-kernel-records", type=int, default=4,
                        help="records explained when counting Kernel SHAP's model rows (default: 4)")
    parser.add_argument("--cost-no-kernel", action="store_true", help="skip the Kernel SHAP model-row counts")
    parser.add_argument("--cost-own-timing", action="store_true",
                        help="time one BatchSize-image invocation per method here even when the methods section "
                             "ran (slower; its per-image times come from smaller invocations and are scaled)")


def run(harness: Harness, args, results: dict) -> dict:
    """Cost per 1000 explanations of each method on each ``--models`` model; Kernel SHAP's model rows."""
    started = time.perf_counter()
    counter = RequestCounter()
    rows = []
    with counter.installed():
        for key in args.models:
            subject = SUBJECTS[key]()
            harness.publish(subject)
            for spec in (spec for spec in args.methods if spec.supports(subject.card)):
                method_started = time.perf_counter()
                row = cost_row(harness, subject, spec, args, results, counter)
                rows.append(row)
                total = row.get("cost", {}).get("total")
                status = f"FAILED {row['error']}" if row["error"] else f"${total:.4f} per 1000"
                print(f"[cost] {key} {spec.name}: {status} ({time.perf_counter() - method_started:.1f} s)",
                      flush=True)
    kernel = [] if args.cost_no_kernel else benchmark_kernel_rows(harness, args)
    return {"prices": dataclasses.asdict(PRICES), "rows": rows, "kernel_shap": kernel,
            "elapsed_s": time.perf_counter() - started}


def dollars(value) -> str:
    return "-" if value is None else f"{value:.4f}" if value >= 0.0001 else f"{value:.2e}"


COST_COLUMNS = [
    Column("model", lambda r: r["model"]),
    Column("method", lambda r: r["method"]),
    Column("MB", lambda r: r["memory_mb"]),
    Column("batch", lambda r: r["batch"]),
    Column("s/expl", lambda r: r["s_per_explanation"], "{:.3f}"),
    Column("GB-s/1000", lambda r: r.get("cost", {}).get("gb_seconds"), "{:.1f}"),
    Column("compute $", lambda r: dollars(r.get("cost", {}).get("lambda_compute"))),
    Column("requests $", lambda r: dollars(r.get("cost", {}).get("lambda_requests"))),
    Column("S3 $", lambda r: dollars(r.get("cost", {}).get("s3"))),
    Column("SQS $", lambda r: dollars(r.get("cost", {}).get("sqs"))),
    Column("DynamoDB $", lambda r: dollars(r.get("cost", {}).get("dynamodb"))),
    Column("total $/1000", lambda r: dollars(r.get("cost", {}).get("total"))),
    Column("duration from", lambda r: r["error"] or r["duration_source"]),
]

REQUEST_COLUMNS = [
    Column("model", lambda r: r["model"]),
    Column("method", lambda r: r["method"]),
    Column("S3 tier1", lambda r: r["requests"]["s3_tier1"], "{:.2f}"),
    Column("S3 tier2", lambda r: r["requests"]["s3_tier2"], "{:.2f}"),
    Column("DDB WRU", lambda r: r["requests"]["dynamodb_write_units"], "{:.2f}"),
    Column("DDB RRU", lambda r: r["requests"]["dynamodb_read_units"], "{:.2f}"),
    Column("SQS", lambda r: r["requests"]["sqs_requests"], "{:.3f}"),
    Column("KB out", lambda r: r["requests"]["kb_written"], "{:.0f}"),
    Column("handler calls per explanation (counted)",
           lambda r: ", ".join(f"{name.split(':')[1]} {n:.2f}" for name, n in r["requests"]["operations"].items())),
]

KERNEL_COLUMNS = [
    Column("table", lambda r: r["table"]),
    Column("M", lambda r: r["features"]),
    Column("bg rows", lambda r: r["background_rows"]),
    Column("nb_samples", lambda r: f"{r['nb_samples']}{' (default)' if r['default'] else ''}"),
    Column("coalitions", lambda r: r["coalitions"], "{:.0f}"),
    Column("2^M-2", lambda r: r["all_coalitions"]),
    Column("rows/record", lambda r: r["rows_per_record"], "{:.0f}"),
    Column("Clarify rows", lambda r: r["clarify_rows"]),
    Column("ours/Clarify", lambda r: r["rows_per_record"] / r["clarify_rows"], "{:.2f}"),
]


def tables(section: dict, args) -> list[str]:
    """The cost table, the counted requests behind it and Kernel SHAP's model rows."""
    prices = section["prices"]
    rows = section["rows"]
    out = []
    if rows:
        out.append(format_table(
            f"Cost per 1000 explanations ({prices['region']} list prices of {prices['taken']}, no free tier)",
            COST_COLUMNS, rows, cost_notes(rows, prices)))
        out.append(format_table("Requests per explanation (counted on the emulator)", REQUEST_COLUMNS, rows,
                                request_notes(rows)))
    if section.get("kernel_shap"):
        out.append(format_table("Kernel SHAP: model rows per explained record (counted) vs SageMaker Clarify",
                                KERNEL_COLUMNS, section["kernel_shap"], kernel_notes()))
    return out


def cost_notes(rows: list[dict], prices: dict) -> list[str]:
    functions = sorted({(r["function"], r["memory_mb"], r["batch"], r["architecture"], r["ephemeral_mb"])
                        for r in rows})
    return [
        "One explanation: one image, one method, one class (the predicted one), at the row's profile parameters",
        "  (full = registry defaults; quick = QUICK_OVERRIDES, not the defaults: see the JSON 'params').",
        "MB, batch: the family function's MemorySize and SQS BatchSize read from template.yaml in this run: "
        + "; ".join(f"{f} {m} MB, BatchSize {b}, {a}, /tmp {e} MB" for f, m, b, a, e in functions) + ".",
        "s/expl: handler seconds of one warm invocation of `batch` images / batch. 'measured': that invocation,",
        "  timed here; 'methods': the methods section's per-image handler time x batch (assumes the per-image",
        "  time of its smaller invocations holds at BatchSize; the burst section measures what batching gains).",
        f"compute $: GB-s x ${prices['lambda_x86_gb_second']:g}/GB-s (x86; duration rounded up to 1 ms per invocation)"
        f" + /tmp above 512 MB x ${prices['lambda_ephemeral_gb_second']:g}/GB-s; requests $: 1000/batch invocations x"
        f" ${prices['lambda_request'] * 1e6:.2f}/1M.",
        f"S3 $: tier-1 requests x ${prices['s3_tier1_request'] * 1000:g}/1000 + tier-2 x "
        f"${prices['s3_tier2_request'] * 1000:g}/1000; SQS $: billed requests x ${prices['sqs_request'] * 1e6:.2f}/1M;"
        f" DynamoDB $: WRU x ${prices['dynamodb_write_unit'] * 1e6:g}/1M"
        f" + RRU x ${prices['dynamodb_read_unit'] * 1e6:g}/1M.",
        "Not included: cold starts (the init phase is billed; amortised over the invocations of an environment),",
        "  S3 storage and data transfer, CloudWatch Logs/metrics and X-Ray, the idle SQS long polls of each queue,",
        "  partial batches (an invocation with fewer than BatchSize messages costs more per explanation).",
    ]


def request_notes(rows: list[dict]) -> list[str]:
    quick = any(r["duration_source"].startswith("methods") for r in rows)
    return [
        "Counted on a warm invocation of BatchSize uploads (measure_handler: a warm-up invocation, then the",
        "  counted one), every botocore API call of the handler by operation, divided by BatchSize; plus the",
        "  user's upload PUT (counted: calls of the upload, per image) in S3 tier1.",
        "  Rows whose duration comes from the methods section were counted at the quick parameters"
        + (" (as here)" if quick else "") + ": what is read and written does not depend on sample counts.",
        "S3 tier1: PUT/COPY/POST/LIST; tier2: GET/HEAD and all others; DELETE is free. DDB: the idempotency lock"
        " (Powertools' table), write units (items < 1 KB) and read units (0.5 eventually, 1 strongly consistent).",
        "SQS: the S3 notification's SendMessage (counted per upload, billed per 64 KB of its measured body) +",
        "  Lambda's poller, modelled: ceil(batch/10) ReceiveMessage (per 64 KB returned) and DeleteMessageBatch",
        "  per batch. KB out: bytes PUT by the handler per explanation.",
    ]


def kernel_notes() -> list[str]:
    return [
        "Counted: the rows passed to the model function of our KernelExplainer (ShapMethod.outputs wrapped), warm:",
        "  coalitions x background rows + 1 (the record's own output); the first call also scores the background",
        "  once (shap's expected value). shap's KernelExplainer caps nsamples at 2^M - 2 and then enumerates every",
        "  coalition; below the cap it enumerates the smallest and largest coalition sizes that fit the budget and",
        "  samples the rest (deduplicated), so nb_samples=500 on 10 features is an estimate, 1022 is exact.",
        "Clarify rows: its documented synthetic dataset, baseline rows x MIN(2M + 2^11, 2^M - 2) without",
        "  NumberOfSamples (docs.aws.amazon.com/sagemaker/latest/dg/clarify-online-explainability-create-endpoint-",
        "  synthetic.html: 10 features, one-row baseline: 1022 records).",
    ]
