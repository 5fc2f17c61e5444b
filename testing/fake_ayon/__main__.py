"""Run the local AYON server until SIGTERM; print ``FAKE_AYON_URL=...`` once listening.

    python -m atomic_publish.testing.fake_ayon --data DIR [--port 0] [--user NAME]
           [--api-key-file FILE] [--seed PROJECT FOLDER_PATH TASK] [--fault JSON]...

The API key is read from a file (or ``FAKE_AYON_API_KEY``), never from the command line,
where every user of the machine could read it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .. import serve_until_signal
from . import BANNER, FakeAyonServer


def _fault(text: str) -> dict:
    fault = json.loads(text)
    if not isinstance(fault, dict):
        raise argparse.ArgumentTypeError("a fault is a JSON object")
    return fault


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m atomic_publish.testing.fake_ayon",
                                     description="A local AYON server for tests.")
    parser.add_argument("--data", required=True, help="folder holding the persisted entities and the log")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--user", default="atomic-publish", help="the service user of the API key")
    parser.add_argument("--api-key-file", help="file holding the one accepted API key "
                                               "(default: $FAKE_AYON_API_KEY, else 'fake-ayon-api-key')")
    parser.add_argument("--seed", nargs=3, metavar=("PROJECT", "FOLDER_PATH", "TASK"),
                        help="create a project, a folder path and a task at start")
    parser.add_argument("--fault", action="append", type=_fault, default=[],
                        help="a scripted fault as JSON (repeatable); see docs/fakes.md")
    args = parser.parse_args(argv)
    if args.api_key_file:
        api_key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
    else:
        api_key = os.environ.get("FAKE_AYON_API_KEY", "fake-ayon-api-key")
    if not api_key:
        print("fake_ayon: the API key is empty", file=sys.stderr)
        return 2
    server = FakeAyonServer(args.data, api_key=api_key, user=args.user, port=args.port,
                            faults=args.fault)
    if args.seed:
        project, folder, task = args.seed
        server.seed(project, folders=[folder], tasks=[task])
    return serve_until_signal(server, BANNER)


if __name__ == "__main__":
    raise SystemExit(main())
