"""Manage the API's keys in the clients table (the stack output ApiClientsTableName).

    python -m devtools.api_keys create --table TABLE --client NAME   # prints the key once
    python -m devtools.api_keys disable --table TABLE --key KEY
    python -m devtools.api_keys list --table TABLE

Uses the normal boto3 settings (profile, region, AWS_ENDPOINT_URL for a local emulator). Only the
key's SHA-256 is stored; a lost key cannot be recovered, only replaced.
"""

import argparse
import sys

import boto3

from explain_core.authorizer import key_hash, register_client


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["create", "disable", "list"])
    parser.add_argument("--table", required=True, help="the ApiClientsTableName stack output")
    parser.add_argument("--client", help="client id (create)")
    parser.add_argument("--key", help="the key to disable")
    args = parser.parse_args(argv)
    table = boto3.resource("dynamodb").Table(args.table)
    if args.command == "create":
        if not args.client:
            parser.error("create needs --client")
        print(register_client(table, args.client))
    elif args.command == "disable":
        if not args.key:
            parser.error("disable needs --key")
        table.update_item(Key={"key_hash": key_hash(args.key)}, UpdateExpression="SET enabled = :no",
                          ConditionExpression="attribute_exists(key_hash)", ExpressionAttributeValues={":no": False})
        print("disabled")
    else:
        scan = {"ProjectionExpression": "client_id, enabled, created_at"}
        while True:
            page = table.scan(**scan)
            for item in page["Items"]:
                print(f"{item['client_id']}\t{'enabled' if item['enabled'] else 'disabled'}\t{item['created_at']}")
            if "LastEvaluatedKey" not in page:
                break
            scan["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return 0


if __name__ == "__main__":
    sys.exit(main())
