"""`atomic-publish deliver`: deliver the pending notifications of published versions.

Notify integrations are delivered after the commit from the record's outbox; when a
receiver was down, later attempts of the same task and this command retry them until
they are acknowledged. Receivers deduplicate by the Idempotency-Key, so a retry is safe.
A publish of several products has one outbox per product (``outbox`` at the top of the record
for product 0, ``extra_products.{i}.outbox`` for product i): every one is delivered.
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
    from ..idempotency import records as R
    from .cliutil import open_store_for
    from . import integrate, retry
    from .errors import PublishError

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
            if not integrate.has_pending(rec):  # any product's outbox (extra_products.{i}.outbox too)
                continue
            key = rec["_id"]
            try:
                products = integrate.recorded_products(rec)
                integrations = integrate.build(products[0])
            except PublishError as exc:  # one unreadable record must not stop the others' deliveries
                print(f"{key}: notifications not delivered: {exc.cause}; {exc.todo}")
                pending[key] = ["(the record's manifest)"]
                continue
            rec["files"] = store.staged.of_key(key)

            def mark(where: str, entry: dict, key: str = key) -> bool:
                result = store.records.col.update_one({"_id": key, f"{where}.state": "pending"},
                                                      {"$set": {where: entry}})
                return result.modified_count == 1

            def call(operation, fn, *a):
                return retry.call(operation, policy, fn, *a)

            before = sum(1 for view in R.product_views(rec) for e in (view.get("outbox") or {}).values()
                         if e.get("state") == "pending")
            still = integrate.deliver_pending(integrations, products, key, rec, call, mark,
                                              store.catalog.version_id)
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
