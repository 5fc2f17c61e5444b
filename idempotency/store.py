"""The persistence layer: records, reservations and the catalogue behind one object."""
from __future__ import annotations

import os

from .catalog import Catalog
from .connection import connect, resolve_uri
from .records import Records
from .reservations import Reservations
from .staged import StagedFiles

STATE_DATABASE = "atomic_publish"


class Store:
    """What an attempt needs from MongoDB.

    ``database`` holds the OpenPype project collections (``avalon`` by default, or
    ``$ATOMIC_PUBLISH_DATABASE``); atomic-publish's own collections live in the
    ``atomic_publish`` database.
    """

    def __init__(self, client, database: str | None = None, described_as: str = "",
                 state_database: str | None = None):
        self.client = client
        self.described_as = described_as
        state = client[state_database or os.environ.get("ATOMIC_PUBLISH_STATE_DATABASE", STATE_DATABASE)]
        self.records = Records(state["records"])
        self.reservations = Reservations(state["reservations"])
        self.staged = StagedFiles(state["staged_files"])
        self.catalog = Catalog(client, database or os.environ.get("ATOMIC_PUBLISH_DATABASE", "avalon"))

    def ensure_indexes(self) -> None:
        """Create the indexes unless they exist (one round trip on every attempt after the first)."""
        try:
            names = {i["name"] for i in self.reservations.col.list_indexes()}
        except Exception:
            names = set()
        if {"one_key_per_version", "by_key"} <= names and "state_1" in {
                i["name"] for i in self.records.col.list_indexes()} and "by_key" in {
                i["name"] for i in self.staged.col.list_indexes()}:
            return
        self.records.ensure_indexes()
        self.reservations.ensure_indexes()
        self.staged.ensure_indexes()

    def close(self) -> None:
        self.client.close()


def open_store(cli_uri: str | None = None, ensure_indexes: bool = True) -> Store:
    """Resolve the URI (see connection.resolve_uri), connect, and make sure the indexes exist
    (read-only commands such as audit and status skip that write)."""
    uri, where = resolve_uri(cli_uri)
    store = Store(connect(uri), described_as=where)
    if ensure_indexes:
        store.ensure_indexes()
    return store
