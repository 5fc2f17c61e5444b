"""`atomic-publish deliver`: deliver the pending notifications of published versions.

Notify integrations are delivered after the commit from the record's outbox; when a
receiver was down, later attempts of the same task and this command retry them until
they are acknowledged. Receivers deduplicate by the Idempotency-Key, so a retry is safe.
"""
from __future__ import annotations

import argparse
import json



def configure_parser(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--key", help="one publish, by its idempotency key (give one of --key, --job-id, --all)")
    g.add_argument("--job-id", help="every publish of a Deadline job (give one of --key, --job-id, --all)")
    g.add_argument("--all", action="store_true",
                   help="every published version with a pending notification (give one of --key, --job-id, --all)")
    from .cliutil import add_store_options

    add_store_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def main(args: argparse.Namespace) -> int:
    from .cliutil import open_store_for
    from . import integrate, retry
    from .layout import plan_files
    from .manifest import parse_manifest

    store = open_store_for("deliver", args.store, start_embedded=True, chosen_catalog=True)
    if store is None:
        return 1
    query: dict = {"state": "PUBLISHED"}
    if args.key:
        query["_id"] = args.key
    elif args.job_id:
        query["job_id"] = args.job_id
    delivered, pending = 0, {}
    policy = retry.RetryPolicy(attempts=3, budget=30.0)
    try:
        for rec in store.records.col.find(query):
            outbox = rec.get("outbox") or {}
            if not any(e.get("state") == "pending" for e in outbox.values()):
                continue
            manifest = parse_manifest(json.loads(rec["manifest_json"]))
            rec["files"] = store.staged.of_key(rec["_id"])
            integrations = integrate.build(manifest)
            key = rec["_id"]

            def mark(ident: str, entry: dict, key: str = key) -> bool:
                result = store.records.col.update_one({"_id": key, f"outbox.{ident}.state": "pending"},
                                                      {"$set": {f"outbox.{ident}": entry}})
                return result.modified_count == 1

            def call(operation, fn, *a):
                return retry.call(operation, policy, fn, *a)

            before = sum(1 for e in outbox.values() if e.get("state") == "pending")
            still = integrate.deliver_pending(integrations, manifest, key, rec,
                                              plan_files(manifest, rec["version"]), call, mark)
            delivered += before - len(still)
            if still:
                pending[key] = still
    finally:
        store.close()
    summary = {"delivered": delivered, "pending": pending}
    waiting = "; ".join(f"{k} ({', '.join(v)})" for k, v in pending.items()) or "none"
    print(f"delivered {delivered} notification(s); still pending: {waiting}")
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0 if not pending else 75
