"""Run many `atomic-publish` command lines fast: import the CLI once, fork one real process per run.

Importing the wrapper costs ~0.7 s of CPU per process, which a corpus of 100 cases cannot pay on
2 cores. This zygote imports it once; each run is a forked child that sets its own environment,
working directory and stdio, then does exactly what `python -m atomic_publish.wrapper.cli` does:
``sys.exit(main(argv))``. Its exit status is the real one; its stdout and stderr go to files.

stdin: a JSON list of {"argv", "env", "cwd", "stdout", "stderr"}; stdout: a JSON list of exit codes
(None when a run outlived its timeout and was killed). argv[0] options: ``PARALLEL`` children at once.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback

from atomic_publish.wrapper import cli

cli.build_parser()  # imports the sub-command modules too
import atomic_publish.wrapper.publish  # noqa: E402,F401  (what `run` imports lazily)
import atomic_publish.wrapper.escalation  # noqa: E402,F401
import atomic_publish.wrapper.guard  # noqa: E402,F401
import atomic_publish.wrapper.retry  # noqa: E402,F401


def child(req: dict) -> None:
    try:
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(handle, fd)
            os.close(handle)
        try:
            code = cli.main(req["argv"])
        except SystemExit as exc:
            code = exc.code
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def main() -> None:
    parallel = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    requests = json.load(sys.stdin)
    codes: list[int | None] = [None] * len(requests)
    running: dict[int, tuple[int, float]] = {}
    queue = list(enumerate(requests))
    while queue or running:
        while queue and len(running) < parallel:
            index, req = queue.pop(0)
            pid = os.fork()
            if pid == 0:
                child(req)
            running[pid] = (index, time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for other, (index, started) in list(running.items()):
                if time.monotonic() - started > timeout:
                    os.kill(other, signal.SIGKILL)
            time.sleep(0.005)
            continue
        index, started = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        codes[index] = None if code == -signal.SIGKILL and time.monotonic() - started > timeout else code
    json.dump(codes, sys.stdout)


if __name__ == "__main__":
    main()
