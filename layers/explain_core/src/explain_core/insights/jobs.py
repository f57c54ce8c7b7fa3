"""Insights jobs: a specification becomes parts, each part one SQS message, the last part assembles.

A job is a specification file (:mod:`explain_core.insights.spec`) uploaded to
``incoming/insights/<model>/<version>/<name>.json`` (the API stores its jobs' files under
``.../jobs/<job id>.json``). Its results go to ``results/insights/<model>/<version>/<name>/``:

- ``plan.json``: the specification, the model's ETag and the parts, each estimated to fit one
  invocation (:meth:`InsightKind.plan`);
- ``parts/<part id>/``: a part's files and, written last, its outcome ``part.json``;
- ``<kind>/``: the assembled pictures of each kind; ``report.json`` (written last: its presence means
  the job is over) and ``index.html``, a page of every picture.

Why parts: an optimisation or a concept test over hundreds of images takes minutes, and a Lambda
invocation dies at 15. The spec's upload event plans the job and sends one message per part to the
function's own queue (``INSIGHTS_QUEUE_URL``); parts run in parallel invocations. A part killed by
the timeout or memory limit writes no outcome, so SQS redelivers its message after the visibility
timeout and it runs again from the start; finished parts are never redone (their outcome is
there). A part that fails with a typed error is final; any other failure is retried, and on the
queue's last receive recorded as failed: the report then says ``partial`` and names it. Every part,
after writing its outcome, lists the outcomes: the one that sees all of them assembles the report
(two finishing together both assemble the same, seeded, report).

Redelivery: a spec delivered again (same ETag) re-sends only the parts without an outcome; a spec
replaced under the same name (new ETag) plans anew, and outcomes of the old plan are ignored.
An API job's DynamoDB record gets the progress (parts total, done, failed, the current part and its
deadline); GET /jobs reads :func:`job_progress`.
"""

import json
import re
import threading
import time
from dataclasses import dataclass

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from explain_core.errors import (
    ExplainError,
    InputChangedError,
    InputDeletedError,
    InvalidInsightsSpecError,
    InvalidKeyError,
    JobTimedOutError,
    UnsupportedModelError,
    is_missing_object,
    is_precondition_failed,
)
from explain_core.input_lock import InputIdentity, LockOutcome
from explain_core.insights import INSIGHTS
from explain_core.insights.base import (
    IMAGE_EXTENSIONS,
    MAX_LISTED_KEYS,
    ImageBatch,
    ImageSet,
    PartContext,
    PartOutcome,
    PartPlan,
    PlanContext,
)
from explain_core.insights.kinds import BY_NAME
from explain_core.insights.spec import MAX_SPEC_BYTES, InsightsSpec, parse_spec
from explain_core.jobs import ATTEMPT_GRACE_SECONDS, iso_seconds, read_optional
from explain_core.keys import NAME_PATTERN, KeyLayout
from explain_core.results import now_iso, strict_json

logger = Logger(child=True)

PLAN_FILE = "plan.json"
REPORT_FILE = "report.json"
INDEX_FILE = "index.html"
PART_FILE = "part.json"
PARTS_DIR = "parts/"
#: The API's jobs: ``incoming/insights/<model>/<version>/jobs/<job id>.json``.
JOBS_DIR = "jobs/"
#: Names an uploaded job may not take: its results folder would hold the API's jobs' folders.
RESERVED_NAMES = frozenset({JOBS_DIR.rstrip("/")})
#: S3 user metadata: the spec's ETag on plan, outcomes and report; the API job id on the spec file (the job
#: record is found by the key, ``jobs/<job id>.json``, which only the API's role may write).
SPEC_ETAG = "spec-etag"
JOB_ID = "job-id"
#: A part is planned to take at most this share of an invocation (estimates are estimates).
PART_SHARE = 0.6
#: Longest part planned, seconds (Lambda's 900 s timeout x PART_SHARE).
MAX_PART_SECONDS = 540.0
#: Pixels of the images in one batch of a part's passes: 64 images up to 96 x 96 px, fewer when larger (a
#: batch's gradients hold every activation: TCAV on MobileNetV2 at 224 px peaked at 4.5 GB in batches of 64).
BATCH_PIXELS = 64 * 96 * 96
#: Parts of one job, at most (each is a message, an invocation and a folder of files).
MAX_PARTS = 200
#: On a part's last receive, its outcome is recorded as timed out this long before the invocation's deadline.
LAST_ATTEMPT_MARGIN_SECONDS = 20
#: Part messages per SendMessageBatch call (SQS's maximum).
SEND_BATCH = 10


# ---------------------------------------------------------------------------------------- where a job lives
@dataclass(frozen=True)
class JobRef:
    """A job named by its spec file's key."""

    spec_key: str
    model: str
    version: str
    name: str  # "<name>" or "jobs/<job id>"
    results_prefix: str

    @property
    def job_id(self) -> str | None:
        """The API job id of a job the API stored; None for an uploaded spec."""
        return self.name[len(JOBS_DIR):] if self.name.startswith(JOBS_DIR) else None

    def key(self, name: str) -> str:
        return self.results_prefix + name

    def parts_prefix(self, spec_etag: str) -> str:
        """The parts of the plan of one version of the spec: a replaced spec's parts never share a folder."""
        return f"{self.results_prefix}{part_prefix_name(spec_etag, '')}"

    def part_prefix(self, spec_etag: str, part_id: str) -> str:
        return f"{self.results_prefix}{part_prefix_name(spec_etag, part_id)}"


def job_ref(keys: KeyLayout, key: str) -> JobRef:
    """The job a spec key names; InvalidKeyError for anything else under the insights prefix."""
    if not key.startswith(keys.family_prefix(INSIGHTS)):
        raise InvalidKeyError(f"{key!r} is not under {keys.family_prefix(INSIGHTS)}", key=key)
    ref = keys.parse_input(keys.settings.input_bucket, key, INSIGHTS)
    stem = ref.name[: -len(".json")] if ref.name.endswith(".json") else ""
    segments = stem.split("/")
    valid = (len(segments) == 1 or (len(segments) == 2 and segments[0] + "/" == JOBS_DIR)) and all(
        NAME_PATTERN.fullmatch(segment) for segment in segments)
    if not valid:
        raise InvalidKeyError(
            f"an insights job is a specification file {keys.family_prefix(INSIGHTS)}<model>/<version>/<name>.json "
            f"with a name of letters, digits, '.', '_' or '-'; got {key!r}", key=key)
    if len(segments) == 1 and segments[0] in RESERVED_NAMES:
        raise InvalidKeyError(f"{segments[0]!r} names the API's jobs folder: give the job another name", key=key)
    prefix = f"{keys.model_results_prefix(INSIGHTS, ref.model, ref.version)}{stem}/"
    return JobRef(key, ref.model, ref.version, stem, prefix)


def api_spec_key(keys: KeyLayout, model: str, version: str, job_id: str) -> str:
    """Where the API stores the specification of its job ``job_id``."""
    from explain_core.keys import check_name

    return (f"{keys.family_prefix(INSIGHTS)}{check_name(model, 'model')}/{check_name(version, 'version')}/"
            f"{JOBS_DIR}{check_name(job_id, 'job id')}.json")


def part_message(job: JobRef, spec_etag: str, part_id: str) -> str:
    """The body of a part's SQS message."""
    return json.dumps({"insights_part": {"spec_key": job.spec_key, "spec_etag": spec_etag, "part": part_id}})


# ---------------------------------------------------------------------------------------- the jobs
class InsightsJobs:
    """Plans jobs and runs their parts with the insights function's session."""

    def __init__(self, session, queue_url: str, sqs=None, jobs_table=None):
        self.session = session
        self.settings = session.settings
        self.s3 = session.s3
        self.keys = session.keys
        self.queue_url = queue_url
        self._sqs = sqs
        self._table = jobs_table

    @property
    def sqs(self):
        if self._sqs is None:
            import boto3

            self._sqs = boto3.client("sqs")
        return self._sqs

    @property
    def table(self):
        if self._table is None and self.settings.jobs_table:
            import boto3

            self._table = boto3.resource("dynamodb").Table(self.settings.jobs_table)
        return self._table

    # ------------------------------------------------------------------------ the spec's upload: plan
    def plan(self, key: str, etag: str | None, context) -> dict | None:
        """Plan the job of the spec file ``key`` (its version ``etag``) and send its parts; returns the plan, or
        None when another invocation is planning it. A typed error (bad spec, unknown model, a part that cannot
        fit) propagates: the adapter records it."""
        job = job_ref(self.keys, key)
        data, etag = self._read_spec(key, etag)
        spec = parse_spec(data)
        existing = self._read_json(job.key(PLAN_FILE))
        if existing is not None and existing["spec_etag"] == etag:
            return self._deliver_again(job, existing, context)
        # One planner per version: two plans of one version could split its work differently (their pass time
        # is measured), and one's outcomes would count as the other's.
        identity = InputIdentity(self.settings.input_bucket, key, etag, "insights-plan")
        lock = self.session.input_lock
        held = lock.acquire(identity, remaining_millis(context)) if lock is not None else LockOutcome.ACQUIRED
        if held is LockOutcome.IN_PROGRESS:
            logger.info("spec being planned by another invocation", extra={"key": key})
            return None
        existing = self._read_json(job.key(PLAN_FILE))
        if existing is not None and existing["spec_etag"] == etag:
            return self._deliver_again(job, existing, context)
        try:
            plan = self._plan(job, spec, etag, context)
        except Exception as exc:
            if lock is not None:
                lock.release(identity, exc)
            raise
        if lock is not None:
            lock.complete(identity, job.key(PLAN_FILE))
        return plan

    def _deliver_again(self, job: JobRef, plan: dict, context) -> dict:
        """The spec's version delivered again: re-send the parts without an outcome (a crash between the plan and
        its messages), or assemble when every part has one."""
        etag = plan["spec_etag"]
        logger.info("spec delivered again: re-sending the parts without an outcome", extra={"key": job.spec_key})
        pending = [part["id"] for part in plan["parts"] if self._outcome(job, etag, part["id"]) is None]
        self._send(job, etag, pending)
        if not pending:
            self.assemble_if_done(job, plan, context)
        return plan

    def _plan(self, job: JobRef, spec, etag: str, context) -> dict:
        key = job.spec_key
        loaded = self.session.load(job.model, job.version)
        if loaded.modality.name != "image":
            raise UnsupportedModelError(
                f"insights explain image models; {job.model}/{job.version} is a {loaded.card.modality} model",
                modality=loaded.card.modality)
        seconds_per_pass = measure_pass_seconds(loaded)
        max_part = min(MAX_PART_SECONDS, PART_SHARE * remaining_millis(context) / 1000)
        plan_context = PlanContext(loaded=loaded, seconds_per_pass=seconds_per_pass, max_part_seconds=max_part)
        parts: list[PartPlan] = []
        for kind, kind_spec in spec.requested():
            planned = kind.plan(kind_spec, plan_context)
            for part in planned:
                if part.kind != kind.name:
                    raise ValueError(f"{kind.name} planned a part of kind {part.kind}")
            parts += planned
        if len(parts) > MAX_PARTS:
            raise InvalidInsightsSpecError(
                f"the job needs {len(parts)} parts; the limit is {MAX_PARTS}: ask for fewer objectives, classes, "
                "random sets or queries, or split it into several jobs", parts=len(parts), limit=MAX_PARTS)
        ids = [part.id for part in parts]
        if len(set(ids)) != len(ids):
            raise ValueError(f"part ids are not unique: {ids}")
        plan = {
            "job": {"spec_key": key, "name": job.name, "job_id": job.job_id, "results_prefix": job.results_prefix},
            "spec_etag": etag,
            "spec": spec.model_dump(mode="json", by_alias=True),
            "model": {"name": loaded.name, "version": loaded.version, "etag": loaded.model_etag,
                      "card_etag": loaded.card_etag, "background_etag": self._background_etag(loaded)},
            "seconds_per_pass": round(seconds_per_pass, 6),
            "max_part_seconds": round(max_part, 1),
            "parts": [part.model_dump(mode="json") for part in parts],
            "estimated_seconds": round(sum(part.estimated_seconds for part in parts), 1),
            "created_at": now_iso(),
        }
        self.session.writer.put_json(job.key(PLAN_FILE), plan, {SPEC_ETAG: etag})
        self._record(job.job_id, "SET parts_total = :total, parts_done = :zero, parts_failed = :zero, "
                             "job_status = :running, spec_etag = :etag",
                     {":total": len(parts), ":zero": 0, ":running": "running", ":etag": etag})
        self.session.writer.delete_error(key)
        self._send(job, etag, ids)
        logger.info("insights job planned", extra={"key": key, "parts": len(parts),
                                                    "estimated_seconds": plan["estimated_seconds"]})
        return plan

    def _read_spec(self, key: str, etag: str | None) -> tuple[bytes, str]:
        """(bytes, ETag) of the version the event names, size checked before the body is read."""
        try:
            response = self.s3.get_object(Bucket=self.settings.input_bucket, Key=key,
                                          **({"IfMatch": etag} if etag else {}))
        except ClientError as exc:
            if is_missing_object(exc):
                raise InputDeletedError(f"s3://{self.settings.input_bucket}/{key} was deleted after its upload "
                                        "event", key=key) from exc
            if is_precondition_failed(exc):
                raise InputChangedError(f"s3://{self.settings.input_bucket}/{key} was replaced after its upload "
                                        "event; the new version's own event runs it", key=key, etag=etag) from exc
            raise
        if response["ContentLength"] > MAX_SPEC_BYTES:
            response["Body"].close()
            raise InvalidInsightsSpecError(f"the specification is {response['ContentLength']} bytes; the limit is "
                                           f"{MAX_SPEC_BYTES}", size=response["ContentLength"], limit=MAX_SPEC_BYTES)
        return response["Body"].read(), response["ETag"].strip('"')

    def _send(self, job: JobRef, etag: str, part_ids: list[str]) -> None:
        for start in range(0, len(part_ids), SEND_BATCH):
            entries = [{"Id": str(i), "MessageBody": part_message(job, etag, part_id)}
                       for i, part_id in enumerate(part_ids[start:start + SEND_BATCH])]
            response = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            if response.get("Failed"):
                raise RuntimeError(f"SQS refused part messages: {response['Failed']}")

    # ------------------------------------------------------------------------ a part
    def run_part(self, message: dict, context, *, receive_count: int = 1) -> PartOutcome | None:
        """Run the part a message names and record its outcome; None when there is nothing to do (a stale
        message of a replaced spec, or a part already done). A typed error is the part's final outcome; any
        other exception propagates (the message is retried) except on the queue's last receive."""
        job = job_ref(self.keys, message["spec_key"])
        etag, part_id = message["spec_etag"], message["part"]
        plan = self._read_json(job.key(PLAN_FILE))
        if plan is None or plan["spec_etag"] != etag:
            logger.info("part of a replaced or unknown plan: skipped", extra={"key": job.spec_key, "part": part_id})
            return None
        part = next((PartPlan(**p) for p in plan["parts"] if p["id"] == part_id), None)
        if part is None:
            logger.warning("part not in the plan: skipped", extra={"key": job.spec_key, "part": part_id})
            return None
        if self._outcome(job, etag, part_id) is not None:
            logger.info("part already done", extra={"key": job.spec_key, "part": part_id})
            self.assemble_if_done(job, plan, context)
            return None
        # One attempt at a time: a duplicate delivery leaves the part to the invocation that holds it (whose
        # own message comes back if it is killed; the lock expires with that invocation).
        identity = InputIdentity(self.settings.results_bucket, job.part_prefix(etag, part_id), etag, "insights-part")
        lock = self.session.input_lock
        if lock is not None:
            held = lock.acquire(identity, remaining_millis(context))
            if held is not LockOutcome.ACQUIRED:
                logger.info("part held by another invocation", extra={"part": part_id, "lock": held.value})
                return None
        try:
            outcome = self._run_held(job, plan, part, receive_count, context)
        except Exception as exc:  # the next delivery may try again (a killed invocation's lock expires with it)
            if lock is not None:
                lock.release(identity, exc)
            raise
        if lock is not None:
            lock.complete(identity, job.part_prefix(etag, part_id) + PART_FILE)
        self.assemble_if_done(job, plan, context)
        return outcome

    def _run_held(self, job: JobRef, plan: dict, part: PartPlan, receive_count: int, context) -> PartOutcome:
        etag, job_id = plan["spec_etag"], plan["job"].get("job_id")
        now = time.time()
        self._record(job_id, "SET current_part = :part, current_part_title = :title, current_part_attempt = :attempt, "
                             "current_part_started_at = :started, current_part_deadline = :deadline",
                     {":part": part.id, ":title": part.title, ":attempt": receive_count,
                      ":started": _decimal(now), ":deadline": _decimal(now + remaining_millis(context) / 1000)})
        started = time.perf_counter()
        spec = InsightsSpec.model_validate(plan["spec"])
        kind = BY_NAME[part.kind]
        gave_up = threading.Event()
        guard = self._deadline_guard(job, plan, part, receive_count, context, gave_up)
        try:
            loaded = self._load_for(plan)
            ctx = self.context(job, loaded, plan, part.id, context, folder=part_prefix_name(etag, part.id))
            summary = kind.run_part(getattr(spec, kind.name), part, ctx)
            strict_json(summary)  # refuse NaN/inf and non-JSON before anything says succeeded
            outcome = PartOutcome(id=part.id, kind=part.kind, title=part.title, status="succeeded", summary=summary,
                                  files=ctx.files, attempt=receive_count,
                                  seconds=round(time.perf_counter() - started, 3), finished_at=now_iso())
        except ExplainError as exc:
            logger.warning("part refused", extra={"part": part.id, "error": exc.to_dict()})
            outcome = self._failed(part, exc.to_dict(), receive_count, started)
        except Exception as exc:
            if receive_count < self.settings.max_receive_count:
                if guard is not None:
                    guard.cancel()
                self._record(job_id, "SET last_error = :error",
                             {":error": f"part {part.id} attempt {receive_count}: {type(exc).__name__}: {exc}"[:1000]})
                raise
            logger.exception("part failed on its last attempt", extra={"part": part.id})
            outcome = self._failed(part, {"type": type(exc).__name__, "code": "internal_error",
                                          "message": str(exc)[:2000],
                                          "details": {"dead_lettered": False, "attempts": receive_count}},
                                   receive_count, started)
        if gave_up.is_set():  # the deadline guard recorded this attempt as timed out: too late to say otherwise
            return self._outcome(job, etag, part.id)
        if guard is not None:
            guard.cancel()
        self._write_outcome(job, plan, outcome)
        return outcome

    def _write_outcome(self, job: JobRef, plan: dict, outcome: PartOutcome) -> None:
        etag = plan["spec_etag"]
        self.session.writer.put_json(job.part_prefix(etag, outcome.id) + PART_FILE,
                                     {**outcome.model_dump(mode="json"), "spec_etag": etag}, {SPEC_ETAG: etag})
        counter = "parts_done" if outcome.status == "succeeded" else "parts_failed"
        self._record(plan["job"].get("job_id"), f"ADD {counter} :one", {":one": 1})

    def _deadline_guard(self, job: JobRef, plan: dict, part: PartPlan, receive_count: int, context,
                        gave_up: threading.Event):
        """On the queue's last receive, a timer that records the part as timed out shortly before the invocation's
        deadline: killed there, it would write nothing, its message would go to the dead-letter queue and the job
        would never be assembled. None on earlier receives (a killed attempt is delivered again)."""
        if receive_count < self.settings.max_receive_count:
            return None
        seconds = remaining_millis(context) / 1000 - LAST_ATTEMPT_MARGIN_SECONDS
        started = time.perf_counter()

        def give_up():
            gave_up.set()
            error = JobTimedOutError(
                f"part {part.id} did not finish within its last attempt ({receive_count} of "
                f"{self.settings.max_receive_count}): it needs more than the function's timeout; ask for less work "
                "per part (fewer steps, images or designs)", attempts=receive_count)
            self._write_outcome(job, plan, self._failed(part, error.to_dict(), receive_count, started))
            self.assemble_if_done(job, plan, context)

        guard = threading.Timer(max(0.0, seconds), give_up)
        guard.daemon = True
        guard.start()
        return guard

    @staticmethod
    def _failed(part: PartPlan, error: dict, attempt: int, started: float) -> PartOutcome:
        return PartOutcome(id=part.id, kind=part.kind, title=part.title, status="failed", error=error,
                           attempt=attempt, seconds=round(time.perf_counter() - started, 3), finished_at=now_iso())

    def _load_for(self, plan: dict):
        """The plan's model; a model, card or background replaced since the plan fails the part (its results
        would mix two models)."""
        planned = plan["model"]
        loaded = self.session.load(planned["name"], planned["version"])
        now = {"etag": loaded.model_etag, "card_etag": loaded.card_etag,
               "background_etag": self._background_etag(loaded)}
        changed = [name for name, etag in now.items() if name in planned and planned[name] != etag]
        if changed:
            from explain_core.errors import ModelChangedError

            raise ModelChangedError(
                f"model {loaded.name}/{loaded.version} changed after the job was planned ({', '.join(changed)}); "
                "run the job again with a changed specification (e.g. its title): the same bytes are the same "
                "version, whose outcomes are kept", changed=changed)
        return loaded

    # ------------------------------------------------------------------------ the end: assembly
    def assemble_if_done(self, job: JobRef, plan: dict, context) -> dict | None:
        """Write the report once every part has an outcome; None while parts are pending."""
        etag = plan["spec_etag"]
        outcomes = self._outcomes(job, etag)
        if any(part["id"] not in outcomes for part in plan["parts"]):
            return None
        existing = self._read_json(job.key(REPORT_FILE))
        if existing is not None and existing.get("spec_etag") == etag:
            return existing
        if not self._is_current(job, etag):
            logger.info("a replaced plan's parts are all done: not assembled", extra={"key": job.spec_key})
            return None
        started = time.perf_counter()
        spec = InsightsSpec.model_validate(plan["spec"])
        sections, pictures = {}, []
        loaded = None
        for kind, kind_spec in spec.requested():
            parts = [outcomes[part["id"]] for part in plan["parts"] if part["kind"] == kind.name]
            try:
                # The card and layer names only: parts that ran on a replaced model failed already.
                loaded = loaded or self.session.load(plan["model"]["name"], plan["model"]["version"])
                ctx = self.context(job, loaded, plan, None, context, folder=f"{kind.name}/")
                section = kind.assemble(kind_spec, parts, ctx)
                strict_json(section)
                shown = [key for key in ctx.files.values() if key.endswith(".png")]
                shown += [key for key in section.pop("pictures", []) if key not in shown]
                pictures += shown
                failed = [{"id": part.id, "title": part.title, "error": part.error} for part in parts
                          if part.status == "failed"]
                status = "succeeded" if not failed else ("failed" if len(failed) == len(parts) else "partial")
                sections[kind.name] = {**section, "status": status, "failed_parts": failed, "files": ctx.files,
                                       "pictures": shown}
            except ExplainError as exc:  # one kind refusing must not lose the others' (other errors: retried)
                logger.warning("assembly refused", extra={"kind": kind.name, "error": exc.to_dict()})
                sections[kind.name] = {"status": "failed", "error": exc.to_dict()}
        statuses = [section["status"] for section in sections.values()]
        status = ("succeeded" if all(s == "succeeded" for s in statuses) else
                  "failed" if all(s == "failed" for s in statuses) else "partial")
        report = {
            "status": status,
            "title": spec.title,
            "job": plan["job"],
            "spec_etag": etag,
            "model": plan["model"],
            "spec": plan["spec"],
            "kinds": sections,
            "parts": [outcomes[part["id"]].model_dump(mode="json") for part in plan["parts"]],
            "pictures": pictures,
            "index": job.key(INDEX_FILE),
            "planned_at": plan["created_at"],
            "created_at": now_iso(),
            "seconds": {"parts": round(sum(o.seconds or 0 for o in outcomes.values()), 3),
                        "assembly": round(time.perf_counter() - started, 3)},
        }
        from explain_core.insights.report_page import report_page

        if not self._is_current(job, etag):
            return None  # replaced while assembling: the new plan's report is the job's
        self.session.writer.put_many([(job.key(INDEX_FILE), report_page(report), "text/html; charset=utf-8")])
        # The report goes last: its presence means every picture is in place.
        self.session.writer.put_json(job.key(REPORT_FILE), report, {SPEC_ETAG: etag})
        self._record(plan["job"].get("job_id"), "SET job_status = :status REMOVE current_part, current_part_title, "
                                                "current_part_deadline", {":status": status})
        logger.info("insights job done", extra={"key": job.spec_key, "status": status})
        return report

    # ------------------------------------------------------------------------ what parts may use
    def context(self, job: JobRef, loaded, plan: dict, part_id: str | None, context, *, folder: str) -> PartContext:
        writer, prefix = self.session.writer, job.results_prefix + folder
        loaded_sets: dict = {}

        def put(name: str, body: bytes, content_type: str) -> str:
            if "/" in name or not NAME_PATTERN.fullmatch(name):
                raise ValueError(f"a part's file name is one key segment, got {name!r}")
            key = prefix + name
            writer.put_many([(key, body, content_type)])
            ctx.files[name] = key
            return key

        def read(key: str) -> bytes:
            if not key.startswith(job.results_prefix):
                raise ValueError(f"a part reads its own job's files only, not {key!r}")
            return self.s3.get_object(Bucket=self.settings.results_bucket, Key=key)["Body"].read()

        def images(image_set: ImageSet, labelled: bool = False) -> ImageBatch:
            identity = (image_set.model_dump_json(), labelled)
            if identity not in loaded_sets:
                loaded_sets[identity] = self.images(loaded, image_set, labelled)
            return loaded_sets[identity]

        def remaining() -> float | None:
            from explain_core.modalities.base import seconds_available

            return seconds_available(context)

        ctx = PartContext(loaded=loaded, seed=int(plan["spec"].get("seed", 0)),
                          batch_size=part_batch_size(loaded.card, self.session.batch_size),
                          images=images, put=put, read=read, remaining_seconds=remaining,
                          seconds_per_pass=float(plan["seconds_per_pass"]))
        return ctx

    def images(self, loaded, image_set: ImageSet, labelled: bool) -> ImageBatch:
        """An image set's images at the model's input size (typed errors for a bad prefix or image)."""
        card = loaded.card
        if image_set.source == "background":
            background = self.session.store.stored_background(loaded)
            if background is None:
                raise InvalidInsightsSpecError(
                    f"model {loaded.name}/{loaded.version} has no background.npy: give images with source prefix",
                    model=loaded.name)
            if labelled:
                raise InvalidInsightsSpecError("the background has no labels: give a labelled prefix "
                                               "(<prefix><label>/<image>)", source="background")
            inputs = background[: image_set.count]
            from explain_core.insights.pictures import display_pixels

            return ImageBatch(inputs=inputs, pixels=display_pixels(inputs, card), source="background")
        found = self._list_images(image_set)
        import numpy as np

        from explain_core.attribution import preprocess
        from explain_core.images import read_listed_image, resize

        settings, pixels, labels = self.settings, [], []
        for item in found:  # one full-size image in memory at a time
            decoded = read_listed_image(self.s3, settings.input_bucket, item, settings)
            pixels.append(resize(decoded.pixels, card.input_height, card.input_width))
            if labelled:
                relative = item["Key"][len(image_set.prefix):].lstrip("/")
                label = relative.rsplit("/", 1)[0].rsplit("/", 1)[-1] if "/" in relative else ""
                if not label:
                    raise InvalidInsightsSpecError(
                        f"{item['Key']} has no label: a labelled set keeps each image in a folder named after its "
                        f"label (<prefix><label>/<image>)", key=item["Key"])
                labels.append(label)
        pixels = np.stack(pixels)
        # The model's input from the resized pixels: to_model_input would resize each image a second time.
        return ImageBatch(inputs=preprocess(pixels, card), pixels=pixels, keys=[item["Key"] for item in found],
                          labels=labels if labelled else None, source="prefix")

    def _list_images(self, image_set: ImageSet) -> list[dict]:
        allowed, prefix = self.keys.family_prefix(INSIGHTS), image_set.prefix
        if not prefix.startswith(allowed) or ".." in prefix or f"/{JOBS_DIR}" in "/" + prefix[len(allowed):]:
            raise InvalidInsightsSpecError(
                f"an image prefix must be under {allowed} of the input bucket, outside its {JOBS_DIR} folders; "
                f"got {prefix!r}", prefix=prefix)
        found = []
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.settings.input_bucket, Prefix=prefix, PaginationConfig={"MaxItems": MAX_LISTED_KEYS})
        for page in pages:
            found += [item for item in page.get("Contents", [])
                      if item["Key"].lower().endswith(IMAGE_EXTENSIONS) and f"/{JOBS_DIR}" not in item["Key"]]
        if not found:
            raise InvalidInsightsSpecError(
                f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under s3://{self.settings.input_bucket}/{prefix}",
                prefix=prefix)
        found.sort(key=lambda item: item["Key"])
        return _spread(found, image_set.count)

    # ------------------------------------------------------------------------ records
    def _read_json(self, key: str) -> dict | None:
        return read_json(self.s3, self.settings.results_bucket, key)

    def _background_etag(self, loaded) -> str | None:
        """The ETag of background.npy beside the model (image sets with source background read it), or None."""
        from explain_core.model_store import BACKGROUND_FILE

        key = self.keys.model_key(loaded.name, loaded.version, BACKGROUND_FILE)
        try:
            return self.s3.head_object(Bucket=self.settings.model_bucket, Key=key)["ETag"].strip('"')
        except ClientError as exc:
            if is_missing_object(exc):
                return None
            raise

    def _is_current(self, job: JobRef, etag: str) -> bool:
        plan = self._read_json(job.key(PLAN_FILE))
        return plan is not None and plan["spec_etag"] == etag

    def _outcome(self, job: JobRef, etag: str, part_id: str) -> PartOutcome | None:
        document = self._read_json(job.part_prefix(etag, part_id) + PART_FILE)
        return _current_outcome(document, etag)

    def _outcomes(self, job: JobRef, etag: str) -> dict[str, PartOutcome]:
        return plan_outcomes(self.s3, self.settings.results_bucket, job, etag)

    def _record(self, job_id: str | None, update: str, values: dict) -> None:
        """Progress on an API job's record (best effort: the results in S3 are the truth)."""
        if not job_id or self.table is None:
            return
        try:
            self.table.update_item(Key={"job_id": job_id}, UpdateExpression=update,
                                   ConditionExpression="attribute_exists(job_id)", ExpressionAttributeValues=values)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                logger.exception("could not record the job's progress", extra={"job_id": job_id})


def part_batch_size(card, default: int) -> int:
    """Images per batch in a part: ``default`` for small inputs, fewer for large ones (:data:`BATCH_PIXELS`)."""
    return max(8, min(default, BATCH_PIXELS // (card.input_height * card.input_width)))


def part_prefix_name(spec_etag: str, part_id: str) -> str:
    """``parts/<plan>/<part id>/`` (``parts/<plan>/`` without a part), the plan named by its spec's ETag."""
    plan = re.sub(r"[^0-9A-Za-z-]", "", spec_etag)[:16] or "plan"
    return f"{PARTS_DIR}{plan}/{part_id}/" if part_id else f"{PARTS_DIR}{plan}/"


def read_json(s3, bucket: str, key: str) -> dict | None:
    """A JSON document of the results bucket, or None when there is none."""
    body = read_optional(s3, bucket, key)
    return json.loads(body) if body is not None else None


def plan_outcomes(s3, bucket: str, job: JobRef, etag: str) -> dict[str, PartOutcome]:
    """Every part's outcome of the plan of spec ``etag`` (its own folder, listed), by part id."""
    outcomes = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=job.parts_prefix(etag)):
        for item in page.get("Contents", []):
            if item["Key"].endswith("/" + PART_FILE):
                outcome = _current_outcome(read_json(s3, bucket, item["Key"]), etag)
                if outcome is not None:
                    outcomes[outcome.id] = outcome
    return outcomes


def _current_outcome(document: dict | None, etag: str) -> PartOutcome | None:
    """A part's outcome if it belongs to the plan of spec ``etag`` (an old plan's outcome is not this one's)."""
    if document is None or document.get("spec_etag") != etag:
        return None
    return PartOutcome.model_validate({k: v for k, v in document.items() if k != "spec_etag"})


def _spread(items: list, count: int) -> list:
    """``count`` items spread evenly over the sorted list (every label of a labelled set, not the first ones)."""
    if len(items) <= count:
        return items
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def remaining_millis(context) -> int:
    """The session's clock (imported here, not at the top: the light API image imports this module)."""
    from explain_core.session import remaining_millis as remaining

    return remaining(context)


def _decimal(value: float):
    from decimal import Decimal

    return Decimal(str(round(value, 3)))


def measure_pass_seconds(loaded) -> float:
    """Warm forward+backward seconds of one image at the model's input size (batch of 4, per image)."""
    import numpy as np
    import tensorflow as tf

    card = loaded.card
    batch = tf.constant(np.random.default_rng(0).normal(size=(4, card.input_height, card.input_width, 3)),
                        tf.float32)

    def once():
        with tf.GradientTape() as tape:
            tape.watch(batch)
            output = loaded.model(batch, training=False)
            total = tf.reduce_sum(output)
        return tape.gradient(total, batch)

    once()  # the first call traces
    started = time.perf_counter()
    once()
    return (time.perf_counter() - started) / 4


# ---------------------------------------------------------------------------------------- progress
def job_progress(s3, settings, spec_key: str, record: dict | None = None, *, now: float | None = None) -> dict:
    """A job's state from the results bucket (and an API job's record): status queued, running, succeeded,
    partial or failed; parts total, done and failed; the current part; the report's or error's key."""
    keys = KeyLayout(settings)
    job = job_ref(keys, spec_key)

    def read(key):
        return read_json(s3, settings.results_bucket, key)

    progress = {"spec_key": spec_key, "results_prefix": job.results_prefix, "report_key": job.key(REPORT_FILE),
                "index_key": job.key(INDEX_FILE)}
    error = read(keys.error_key(spec_key))
    if error is not None and not error.get("retrying"):
        # The latest version of the spec was refused (planning a version deletes older error records).
        return {**progress, "status": "failed", "error": error["error"]}
    plan = read(job.key(PLAN_FILE))
    report = read(job.key(REPORT_FILE))
    if report is not None and plan is not None and report.get("spec_etag") == plan["spec_etag"]:
        parts = report["parts"]
        return {**progress, "status": report["status"], "parts_total": len(parts),
                "parts_done": sum(p["status"] == "succeeded" for p in parts),
                "parts_failed": sum(p["status"] == "failed" for p in parts), "report": report}
    if plan is None:
        return {**progress, "status": "queued", **({"retrying": True, "error": error["error"]} if error else {})}
    planned = {part["id"] for part in plan["parts"]}
    found = plan_outcomes(s3, settings.results_bucket, job, plan["spec_etag"])
    outcomes = [outcome for part_id, outcome in found.items() if part_id in planned]
    progress.update(status="running", parts_total=len(plan["parts"]),
                    parts_done=sum(o.status == "succeeded" for o in outcomes),
                    parts_failed=sum(o.status == "failed" for o in outcomes),
                    estimated_seconds=plan.get("estimated_seconds"))
    record = record or {}
    done_ids = {o.id for o in outcomes}
    if record.get("current_part") and record["current_part"] not in done_ids:
        current = {"id": record["current_part"], "title": record.get("current_part_title"),
                   "attempt": int(record.get("current_part_attempt", 1))}
        deadline = record.get("current_part_deadline")
        if deadline is not None and (time.time() if now is None else now) > float(deadline) + ATTEMPT_GRACE_SECONDS:
            current["killed"] = True
            current["message"] = (f"attempt {current['attempt']} of part {current['id']} did not finish before the "
                                  f"function's timeout ({iso_seconds(float(deadline))}): it was killed (time or memory "
                                  "limit); SQS redelivers the part after its visibility timeout")
        progress["current_part"] = current
    if record.get("last_error"):
        progress["last_error"] = record["last_error"]
    return progress

