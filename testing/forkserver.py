"""A fork server for the fault suite: attempts start in milliseconds instead of a second.

The server imports atomic-publish once, single-threaded, then forks one child per attempt:
each child is a real process (its own pid, session, environment and file descriptors) that
runs ``atomic-publish`` exactly as the console script would, and can be killed, stopped or
left hanging with real signals. Only the interpreter start and the imports are shared.

Protocol (JSON lines on stdin/stdout): ``{"argv": [...], "env": {...}, "out": PATH}`` answers
``{"pid": N}``; when a child ends, the server writes ``PATH.rc`` with its exit code (negative:
the signal that killed it). When its stdin closes (the fault suite ended, normally or not), it
kills every attempt still running, so that no stopped or hung attempt outlives the suite.
"""
from __future__ import annotations

import json
import os
import select
import signal
import sys


def _child(request: dict) -> None:
    os.setsid()
    fd = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    code = 1
    try:
        from ..wrapper import cli, failpoints

        failpoints.configure(os.environ.get("ATOMIC_PUBLISH_FAILPOINTS", ""))
        code = cli.main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap(outputs: dict[int, str], flags: int) -> None:
    """Collect ended attempts and write each one's ``PATH.rc`` (flags 0: wait for all of them)."""
    while outputs:
        try:
            pid, status = os.waitpid(-1, flags)
        except ChildProcessError:
            return
        if pid == 0:
            return
        out = outputs.pop(pid, None)
        if out:
            with open(out + ".rc.tmp", "w") as fh:
                fh.write(str(os.waitstatus_to_exitcode(status)))
            os.replace(out + ".rc.tmp", out + ".rc")


def serve() -> None:
    # Warm every module an attempt uses, while still single-threaded.
    from ..idempotency import store  # noqa: F401
    from ..wrapper import audit, cli, gc, publish  # noqa: F401
    from ..wrapper.integrations import ftrack, webhook  # noqa: F401

    outputs: dict[int, str] = {}
    stdin = sys.stdin.fileno()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    while True:
        ready, _, _ = select.select([stdin], [], [], 0.02)
        _reap(outputs, os.WNOHANG)
        if not ready:
            continue
        line = sys.stdin.readline()
        if not line:  # the fault suite ended (or was killed): no attempt of it may outlive it, stopped or hung
            for pid in outputs:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
            _reap(outputs, 0)  # their exit codes written, so that no waiter of the suite waits out its timeout
            return
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        outputs[pid] = request["out"]
        print(json.dumps({"pid": pid}), flush=True)


if __name__ == "__main__":
    serve()
