"""Scripted faults of the local AYON server, and which requests each one hits.

A fault is a dict (so it travels as JSON over the control endpoint) with ``kind``, ``count``
(how many matching requests it fires for; default 1, ``None`` = forever) and ``target``: which
requests it matches.

=====================  =====================================================================
kind                   effect
=====================  =====================================================================
``http_error``         answer ``status`` (default 503) without running anything
``drop_before``        close the connection without an answer, without running anything
``drop_after_commit``  run the request (a batch is committed and saved), then close the
                       connection without an answer: the client sees a connection error
                       although its entities exist
``delay``              wait ``seconds`` (default 1.0) before running the request
=====================  =====================================================================

``target`` is ``operations`` (default: both operations POSTs), ``poll`` (the background
status GET), ``graphql``, ``rest`` (other ``/api`` requests) or ``any``. A whole outage is not
a fault but :meth:`FakeAyonServer.outage` (stop listening for some seconds, keep the state).
"""
from __future__ import annotations

from .. import FaultBook

__all__ = ["FAULT_KINDS", "TARGETS", "check_targets", "matches", "new_fault_book"]

FAULT_KINDS = ("http_error", "drop_before", "drop_after_commit", "delay")
TARGETS = ("operations", "poll", "graphql", "rest", "any")


def check_targets(faults: list[dict] | dict) -> list[dict]:
    """Return the faults as a list; raise ValueError for an unknown target (a typo must not pass)."""
    faults = [faults] if isinstance(faults, dict) else list(faults)
    for fault in faults:
        if not isinstance(fault, dict):
            raise ValueError("a fault is a JSON object")
        if fault.get("target", "operations") not in TARGETS:
            raise ValueError(f"unknown fault target {fault.get('target')!r}; known: {list(TARGETS)}")
    return faults


def new_fault_book(faults: list[dict] | None = None) -> FaultBook:
    return FaultBook(check_targets(faults or []), kinds=FAULT_KINDS)


def matches(target: str):
    """Predicate for :meth:`FaultBook.take`: does a fault aim at requests of *target*?"""
    def check(fault: dict) -> bool:
        return fault.get("target", "operations") in (target, "any")
    return check
