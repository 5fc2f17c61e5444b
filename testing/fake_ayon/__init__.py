"""A local AYON server for tests, that the unmodified ``ayon-python-api`` client talks to.

Real HTTP on 127.0.0.1, entities persisted in a JSON file of its data folder (a restart keeps
them), the real server's transactional operations batches, unique indexes and foreign keys,
the GraphQL reads the client makes, and scripted faults. See docs/fakes.md, section "The local
AYON server", for what it implements, what it does not, and where its behaviour is a guess.

* :class:`FakeAyonServer` -- in-process (``with FakeAyonServer(dir, api_key=...) as ayon:``)
* :class:`FakeAyonControl` -- steer one started with ``python -m atomic_publish.testing.fake_ayon``
* :func:`seed_id` -- the id a seeded folder or task gets
"""
from .control import FakeAyonControl
from .server import FakeAyonServer, seed_id

__all__ = ["BANNER", "FakeAyonControl", "FakeAyonServer", "seed_id"]

#: The readiness line a process-run server prints: ``FAKE_AYON_URL=http://127.0.0.1:PORT``.
BANNER = "FAKE_AYON_URL"
