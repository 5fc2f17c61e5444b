"""In-process retries of operations that can blip, built from tenacity's strategies.

One layer only: each leaf operation (a store call, a file copy, a rename, an integration
call) is retried on its own; no retried block contains another. Only transient failures
are retried, within a bounded number of attempts and a bounded total time, with
exponential backoff and jitter (or the server's Retry-After), one log line per retry.
A Windows sharing violation (a file open in another program) is one more predicate of the
same policy, joined with ``|``: it is tried ``attempts`` times like any transient failure,
then reported as ``FileInUse`` (transient) rather than as the access error Windows gives it.
"""
from __future__ import annotations

import inspect
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from tenacity import (RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_before_delay,
                      stop_when_event_set, wait_exponential_jitter)
from tenacity.wait import wait_base

from . import progress
from .classify import classify
from .errors import TRANSIENT, Interrupted, Superseded
from .fsops import FileInUse, is_sharing_violation

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5          # tries of one operation, the first included
    budget: float = 60.0       # seconds all tries of one operation may take
    initial: float = 0.5       # first backoff
    max_wait: float = 15.0     # longest single backoff


def _retryable(exc: BaseException) -> bool:
    from .failpoints import FailpointError

    if isinstance(exc, (Interrupted, Superseded, FailpointError)):
        return False
    return classify(exc).failure_class == TRANSIENT


#: what the single policy retries: a transient failure, or a file held open elsewhere (Windows)
RETRY_IF = retry_if_exception(_retryable) | retry_if_exception(is_sharing_violation)


def _cause(exc: BaseException) -> str:
    if is_sharing_violation(exc):
        return f"{getattr(exc, 'filename', None) or 'a file'} is open in another program (sharing violation)"
    return classify(exc).cause


def _in_use(operation: str, exc: BaseException, tries: int) -> BaseException:
    """The error to raise when retries ran out: a sharing violation becomes FileInUse."""
    if is_sharing_violation(exc):
        return FileInUse(f"cannot {operation}: {getattr(exc, 'filename', None) or 'a file'} stayed open in "
                         f"another program after {tries} tries (Windows sharing violation)")
    return exc


class _wait_backoff_or_retry_after(wait_base):
    """Exponential backoff with jitter, or the server's Retry-After when it asks for longer."""

    def __init__(self, policy: RetryPolicy):
        # tenacity 9.2 renamed ``initial`` to ``multiplier`` (and warns on the old name); 8.3, our
        # floor, only has ``initial``
        scale = "multiplier" if "multiplier" in inspect.signature(wait_exponential_jitter).parameters else "initial"
        self.backoff = wait_exponential_jitter(max=policy.max_wait, jitter=policy.initial, **{scale: policy.initial})
        self.cap = policy.budget

    def __call__(self, state: RetryCallState) -> float:
        wait = self.backoff(state)
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            wait = max(wait, float(retry_after))
        return min(wait, self.cap)


def _say_retry(operation: str, exc: BaseException, tried: int, total: int, wait: float) -> None:
    """One line per failed try, numbered over all tries of the operation: "try 2 of 5 failed, try 3 in 1.2 s"."""
    progress.info(f"retry {operation}: {type(exc).__name__}: {_cause(exc)}; "
                  f"try {tried} of {total} failed, try {tried + 1} in {wait:.1f} s")


def _log_retry(operation: str, policy: RetryPolicy, done_before: int = 0,
               total: int | None = None) -> Callable[[RetryCallState], None]:
    def log(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        _say_retry(operation, exc, done_before + state.attempt_number, total or policy.attempts, wait)
    return log


def retrying(operation: str, policy: RetryPolicy, stop_event: threading.Event | None = None,
             done_before: int = 0, total: int | None = None) -> Retrying:
    """``done_before`` tries already failed outside (of ``total``): the log numbers the tries on from there."""
    stop = stop_after_attempt(policy.attempts) | stop_before_delay(policy.budget)
    if stop_event is not None:
        stop = stop | stop_when_event_set(stop_event)
    return Retrying(retry=RETRY_IF, stop=stop, wait=_wait_backoff_or_retry_after(policy),
                    before_sleep=_log_retry(operation, policy, done_before, total), reraise=True)


def call(operation: str, policy: RetryPolicy, fn: Callable[..., T], *args, stop_event: threading.Event | None = None,
         **kwargs) -> T:
    """Run ``fn`` under ``policy``; the last exception is re-raised when retries run out.

    The first try runs directly: the retry machinery is built only when something failed
    (it is on the path of every staged file)."""
    try:
        return fn(*args, **kwargs)
    except BaseException as exc:
        if not (_retryable(exc) or is_sharing_violation(exc)):
            raise
        if policy.attempts <= 1:
            if is_sharing_violation(exc):
                raise _in_use(operation, exc, 1) from exc
            raise
        first = exc
    pause = min(policy.initial, policy.budget)
    _say_retry(operation, first, 1, policy.attempts, pause)
    rest = RetryPolicy(attempts=policy.attempts - 1, budget=policy.budget, initial=policy.initial,
                       max_wait=policy.max_wait)
    time.sleep(pause)
    tried = 1
    try:
        for attempt in retrying(operation, rest, stop_event, done_before=1, total=policy.attempts):
            with attempt:
                tried += 1
                return fn(*args, **kwargs)
    except OSError as exc:
        if is_sharing_violation(exc):
            raise _in_use(operation, exc, tried) from exc
        raise
    raise AssertionError("unreachable")
