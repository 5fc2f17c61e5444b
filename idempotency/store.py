"""The persistence layer: records, reservations and the catalogue behind one object."""
from __future__ import annotations

import os
import uuid
from typing import Any, Callable

from pymongo.errors import DuplicateKeyError

from ..wrapper.errors import StoreMismatch
from .catalog import TRANSACTION_TOPOLOGIES
from .connection import connect, resolve_uri
from .heroes import Heroes
from .records import Records, utcnow
from .reservations import Reservations
from .staged import StagedFiles

STATE_DATABASE = "atomic_publish"
RECORDS_INDEXES = {"job_id_1_task_id_1", "state_1", "by_key_hash"}  # what Records.ensure_indexes creates
RESERVATIONS_INDEXES = {"one_key_per_version", "by_key"}  # the unique index makes numbers exactly-once
INDEXES = 1  # the generation of indexes: bump it with a new index, so that every store creates it once


class Store:
    """What an attempt needs from MongoDB.

    ``database`` holds the OpenPype project collections (``avalon`` by default, or
    ``$ATOMIC_PUBLISH_DATABASE``); atomic-publish's own collections live in the
    ``atomic_publish`` database.
    """

    def __init__(self, client, database: str | None = None, described_as: str = "",
                 state_database: str | None = None, catalog: Any = None):
        self.client = client
        self.described_as = described_as
        state = client[state_database or os.environ.get("ATOMIC_PUBLISH_STATE_DATABASE", STATE_DATABASE)]
        self.records = Records(state["records"])
        self.reservations = Reservations(state["reservations"])
        self.staged = StagedFiles(state["staged_files"])
        self.heroes = Heroes(state["heroes"])  # who moves each product's hero version (wrapper/hero.py)
        self.meta = state["meta"]
        self._store_id: str | None = None
        # The catalogue is received (issue 15: wrapper/catalogs, registry.from_environment builds one on
        # this client); without one, the OpenPype documents helper on this client, as before.
        if catalog is None:
            from ..wrapper.catalogs.openpype import OpenPypeCatalog  # the default backend, on this client

            catalog = OpenPypeCatalog(client, database or os.environ.get("ATOMIC_PUBLISH_DATABASE", "avalon"))
        self.catalog = catalog

    def ensure_indexes(self) -> None:
        """Create the indexes unless this store has them: one read on every attempt after the first.

        The store's meta document (the one holding its id) records which generation of indexes
        was made (``INDEXES``), so the read that tells it also gives the store id the staging
        markers carry: no ``listIndexes`` and no separate id read. A store made by an older
        version, without the field, gets every index created (each an idempotent
        ``createIndexes``) and the field set. ``audit`` checks that the indexes really exist."""
        doc = self.meta.find_one({"_id": "store"}) or {}
        if doc.get("store_id"):
            self._store_id = doc["store_id"]
        if int(doc.get("indexes") or 0) >= INDEXES:
            return
        self.reindex()

    def reindex(self) -> None:
        """Create every index (idempotent) and note their generation in the meta document."""
        self.reservations.ensure_indexes()
        self.staged.ensure_indexes()
        self.records.ensure_indexes()
        for _ in range(2):  # two first publishes of a new store: the second upsert matches the first's
            try:
                self.meta.update_one({"_id": "store"}, {"$max": {"indexes": INDEXES},
                                                        "$setOnInsert": {"store_id": uuid.uuid4().hex,
                                                                         "created_at": utcnow()}}, upsert=True)
                break
            except DuplicateKeyError:
                continue

    def missing_indexes(self) -> list[str]:
        """The indexes this version creates that the store does not have (``audit`` reports them):
        dropped by hand, or lost in a restore that skipped indexes. A store nobody published into
        yet misses nothing: the first publish makes them."""
        if self.records.col.find_one({}, projection={"_id": 1}) is None:
            return []
        names = {i["name"] for i in self.records.col.list_indexes()}
        missing = [f"records.{n}" for n in sorted(RECORDS_INDEXES - names)]
        reservation_names = {i["name"] for i in self.reservations.col.list_indexes()}
        missing += [f"reservations.{n}" for n in sorted(RESERVATIONS_INDEXES - reservation_names)]
        return missing

    def supports_transactions(self) -> bool:
        """Replica sets and SecantusDB commit multi-document transactions; a standalone mongod does not."""
        return self.client.topology_description.topology_type_name in TRANSACTION_TOPOLOGIES

    def store_id(self, create: bool = True) -> str | None:
        """This store's identity: a random id written once into its state database.

        A job records the id of the store it was submitted for (plugin info ``StoreId``), so a
        worker that reaches another store (a blank ``StoreUri``, a missing environment variable,
        the embedded fallback) refuses instead of publishing into a private world."""
        if self._store_id:
            return self._store_id
        doc = self.meta.find_one({"_id": "store"})
        if doc is None and create:
            try:
                self.meta.insert_one({"_id": "store", "store_id": uuid.uuid4().hex, "created_at": utcnow()})
            except DuplicateKeyError:
                pass  # another process created it first: read theirs
            doc = self.meta.find_one({"_id": "store"})
        self._store_id = doc["store_id"] if doc else None
        return self._store_id

    def check_store_id(self, expected: str | None) -> None:
        """Raise StoreMismatch (worker-local) unless this is the store ``expected`` names."""
        if not expected:
            return
        actual = self.store_id(create=False)
        if actual != expected:
            have = f"store id {actual}" if actual else "a store that no job was ever submitted for"
            raise StoreMismatch(
                f"this worker reached {self.described_as or 'a store'} ({have}), but the job was submitted "
                f"for store id {expected}; nothing was written",
                "give this worker the farm's store: set StoreUri in the AtomicPublish plugin configuration "
                "(or ATOMIC_PUBLISH_STORE in the worker's environment); a blank setting falls back to a "
                "private embedded store")

    def close(self) -> None:
        self.client.close()


def open_store(cli_uri: str | None = None, ensure_indexes: bool = True, start_embedded: bool = True,
               catalog: Callable[[Any], Any] | None = None) -> Store:
    """Resolve the URI (see connection.resolve_uri), connect, and make sure the indexes exist
    (read-only commands such as audit and status skip that write, and start no embedded store).
    ``catalog``: builds the catalogue from the connected client (e.g. ``lambda client:
    registry.from_environment(client=client)``); None keeps the OpenPype documents helper."""
    uri, where = resolve_uri(cli_uri, start_embedded)
    client = connect(uri)
    store = Store(client, described_as=where, catalog=catalog(client) if catalog is not None else None)
    if ensure_indexes:
        store.ensure_indexes()
    return store
