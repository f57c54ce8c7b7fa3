"""The SQS events of events/ as S3 would send them for the objects as they are now.

An S3 notification names the object's ETag (and, in a versioned bucket, its version id), and the
functions read exactly that version: an event whose object was replaced since is ``input_changed``.
The events in events/ are templates with a placeholder ETag; after uploading the objects they
name, ``deliver`` fills in each object's real ETag and size, as S3's notification would carry them.

    python -m devtools.local.events deliver events/gradient-upload.json --endpoint http://127.0.0.1:5055 > e.json
"""

import argparse
import copy
import json
import sys
from urllib.parse import unquote_plus


def deliver(event: dict, s3) -> dict:
    """A copy of ``event`` whose S3 records carry the current ETag, size and version id of their objects
    (records of objects that do not exist are left as they are)."""
    event = copy.deepcopy(event)
    for record in event.get("Records", []):
        try:
            body = json.loads(record["body"])
        except (TypeError, ValueError):
            continue  # a poison message stays poison
        if not isinstance(body, dict) or not isinstance(body.get("Records"), list):
            continue
        for s3_record in body["Records"]:
            s3_object = s3_record.get("s3", {}).get("object", {})
            bucket = s3_record.get("s3", {}).get("bucket", {}).get("name")
            if not bucket or "key" not in s3_object:
                continue
            try:
                head = s3.head_object(Bucket=bucket, Key=unquote_plus(s3_object["key"]))
            except s3.exceptions.ClientError:
                continue
            s3_object["eTag"] = head["ETag"].strip('"')
            s3_object["size"] = head["ContentLength"]
            if head.get("VersionId") and head["VersionId"] != "null":
                s3_object["versionId"] = head["VersionId"]
        record["body"] = json.dumps(body)
    return event


def main(argv=None) -> int:
    from devtools.local import aws

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    command = sub.add_parser("deliver", help="print the event with the current ETags of its objects")
    command.add_argument("event_file")
    command.add_argument("--endpoint", default="http://127.0.0.1:5055", help="the S3 emulator's URL")
    args = parser.parse_args(argv)
    with open(args.event_file) as source:
        event = json.load(source)
    json.dump(deliver(event, aws.client("s3", args.endpoint)), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
