"""The insights function's SQS adapter: spec uploads plan jobs, part messages run parts.

The function's queue carries two kinds of messages: S3 notifications of specification files
(``incoming/insights/<model>/<version>/<name>.json``), and the part messages the planner sends
(``{"insights_part": ...}``, :func:`explain_core.insights.jobs.part_message`). The failure policy is the
families' (:mod:`explain_core.sqs_adapter`): a typed error on a spec is an error record under
``errors/insights/...`` and the message is done; anything else is retried and, after the last receive,
dead-lettered. A part's own failures are recorded in the job (:meth:`InsightsJobs.run_part`).
"""

import json
import os

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSEvent, SQSRecord

from explain_core.errors import InputChangedError
from explain_core.insights.jobs import InsightsJobs
from explain_core.sqs_adapter import PoisonMessageError, SqsAdapter

logger = Logger(child=True)
metrics = Metrics()

PART_MESSAGE = "insights_part"


class InsightsAdapter(SqsAdapter):
    """Handles the insights function's SQS events with its session (the family adapter's S3 parsing and
    error records, reused)."""

    def __init__(self, session, jobs: InsightsJobs | None = None):
        super().__init__(session)
        self.insights = jobs or InsightsJobs(session, os.environ.get("INSIGHTS_QUEUE_URL", ""))

    def handle_sqs_event(self, event: dict, context) -> dict:
        request_id = getattr(context, "aws_request_id", None)
        retry: dict[str, Exception] = {}
        for record in SQSEvent(event).records:
            try:
                self._handle_record(record, context, retry, request_id)
            except PoisonMessageError as exc:
                logger.error("message is neither a part nor an S3 event notification",
                             extra={"message_id": record.message_id})
                retry[record.message_id] = exc
        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

        def report(record: SQSRecord):
            if record.message_id in retry:
                raise retry[record.message_id]

        return process_partial_response(event=event, record_handler=report, processor=processor, context=context)

    def _handle_record(self, record: SQSRecord, context, retry: dict, request_id: str | None) -> None:
        receive_count = int(record.attributes.approximate_receive_count or 1)
        part = _part_of(record)
        if part is not None:
            try:
                outcome = self.insights.run_part(part, context, receive_count=receive_count)
            except Exception as exc:  # transient: SQS redelivers the part
                logger.exception("part failed; it will be retried", extra={"part": part.get("part")})
                retry[record.message_id] = exc
                return
            if outcome is not None:
                metrics.add_metric(name="InsightParts", unit=MetricUnit.Count, value=1)
                logger.info("insights part", extra={"part": outcome.id, "status": outcome.status,
                                                    "seconds": outcome.seconds})
            return
        for upload in self._uploads_in(record):
            try:
                plan = self.insights.plan(upload.key, upload.etag, context)
                if plan is not None:
                    metrics.add_metric(name="InsightJobs", unit=MetricUnit.Count, value=1)
                    logger.info("insights job planned", extra={"key": upload.key, "parts": len(plan["parts"])})
            except InputChangedError:
                # An older version's late event (SQS does not keep order): the newer version's own event runs it,
                # and an error record here would report the job as failed.
                logger.info("superseded spec version skipped", extra={"key": upload.key})
            except Exception as exc:
                self._fail(upload, exc, retry, request_id)


def _part_of(record: SQSRecord) -> dict | None:
    """The part a message names, or None for an S3 notification."""
    try:
        body = json.loads(record.body)
    except (TypeError, json.JSONDecodeError) as exc:
        raise PoisonMessageError("message body is not JSON") from exc
    if not isinstance(body, dict) or PART_MESSAGE not in body:
        return None
    part = body[PART_MESSAGE]
    if not isinstance(part, dict) or not all(isinstance(part.get(k), str) for k in ("spec_key", "spec_etag", "part")):
        raise PoisonMessageError("a part message needs spec_key, spec_etag and part")
    return part
