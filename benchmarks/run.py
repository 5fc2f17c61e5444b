"""Benchmark atomic-publish against plain baselines.

    .venv/bin/python -m benchmarks [--quick] [--json] [--repeat N] [--only SCENARIO[,SCENARIO]]
                                   [--store URI] [--dir PARENT] [--output FILE] [--keep] [--profile DIR]

(or ``.venv/bin/python benchmarks/run.py ...``). Creates its data in a new temporary folder,
starts the embedded store there once (its own ATOMIC_PUBLISH_HOME and databases, unless
--store is given), runs every scenario alternately with its baseline, prints a table (or one
JSON object with --json), stops the store and removes the folder. See docs/performance.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import Bench, log, machine
from benchmarks.scenarios import FULL, QUICK, SCENARIOS, Data


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test (minutes -> seconds)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of the table")
    p.add_argument("--repeat", type=int, default=None,
                   help="runs of each scenario and of its baseline, alternated (default 3, --quick 1)")
    p.add_argument("--only", action="append", default=[], metavar="SCENARIO",
                   help=f"run only these scenarios (repeatable or comma-separated): {', '.join(SCENARIOS)}")
    p.add_argument("--store", default=None, metavar="URI",
                   help="a running MongoDB (mongodb://...) instead of the embedded store; the benchmark "
                        "uses its own uniquely named databases there and drops them at the end")
    p.add_argument("--dir", default=None, metavar="PARENT",
                   help="where to make the temporary folder (default: $TMPDIR); pick the filesystem to measure")
    p.add_argument("--output", default=None, metavar="FILE", help="also write the JSON report to FILE")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, store) at the end")
    p.add_argument("--profile", default=None, metavar="DIR",
                   help="run every wrapper under cProfile and write DIR/<job>.prof (slower: for diagnosis only)")
    args = p.parse_args(argv)
    names: list[str] = []
    for item in args.only:
        names += [n.strip() for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.scenarios = [n for n in SCENARIOS if not names or n in names]
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


# -- output ----------------------------------------------------------------------------------
def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.2f} s"
    if unit == "x":
        return f"{value:.3f} x"
    if unit == "ms":
        return f"{value:.3f} ms"
    if unit == "MB":
        return f"{value:.0f} MB"
    return f"{value:g} {unit}"


def _gib(n: int | None) -> str:
    return "?" if not n else f"{n / 2**30:.1f} GiB"


def table(report: dict[str, Any]) -> str:
    m = report["machine"]
    out = []
    fs = m["filesystem"]
    out.append("atomic-publish benchmark" + (" (--quick: reduced sizes)" if report["quick"] else ""))
    out.append(f"machine : {m['cores']} cores ({m['cpu']}), {_gib(m['ram_bytes'])} RAM, {m['platform']}")
    out.append(f"python  : {m['python']}")
    out.append(f"temp dir: {m['temp_dir']} on {fs['type']} ({fs['device']} at {fs['mount']}), "
               f"{_gib(m['disk_free_bytes'])} free")
    out.append(f"store   : {report['store']}")
    out.append(f"strace  : {report.get('strace') or 'not installed: metadata calls not measured (Debian: apt-get install -y strace)'}")
    out.append("bytecode: cached in the temporary folder (PYTHONPYCACHEPREFIX), filled by a warm-up run"
               + (f"; PYTHONDONTWRITEBYTECODE={m['inherited_PYTHONDONTWRITEBYTECODE']} of this environment is "
                  "not passed to the children" if m.get("inherited_PYTHONDONTWRITEBYTECODE") else ""))
    out.append(f"runs    : {report['repeat']} per scenario and per baseline, alternated; median and spread "
               f"(min..max); load average {m.get('loadavg_start')} at start, {report.get('loadavg_end')} at end")
    out.append("")
    header = f"{'scenario':<18} {'measurement':<62} {'median':>10}  {'spread (min..max)':<26} {'ratio':>8}"
    out.append(header)
    out.append("-" * len(header))
    for sc in report["scenarios"]:
        if "error" in sc:
            out.append(f"{sc['title']:<18} FAILED: {sc['error']}")
            continue
        first = True
        for key, se in sc["series"].items():
            ratio = sc["ratios"].get(key)
            spread = (f"{_fmt(se['min'], se['unit'])}..{_fmt(se['max'], se['unit'])} ({se['spread_pct']:.0f}%)"
                      if se["n"] else "-")
            label = se["label"] + (f" [peak RSS {se['peak_rss_mb']:.0f} MB]" if "peak_rss_mb" in se else "")
            if len(label) > 62:
                label = label[:59] + "..."
            out.append(f"{(sc['title'] if first else ''):<18} {label:<62} {_fmt(se['median'], se['unit']):>10}  "
                       f"{spread:<26} {(f'{ratio:.3f}' if ratio is not None else ''):>8}")
            first = False
        for key, se in sc["series"].items():
            if se.get("phases"):
                ph = ", ".join(f"{k} {v:.3f}" for k, v in se["phases"].items())
                out.append(f"{'':<18}   phases of '{key}' (s, median): {ph}")
        extra = _extra_lines(sc)
        out += [f"{'':<18}   {line}" for line in extra]
        out.append(f"{'':<18}   note: {sc['note']}")
    out.append("")
    out.append(f"{'target':<62} {'measured':>12} {'limit':>10}  result")
    out.append("-" * 96)
    for t in report["targets"]:
        verdict = "met" if t["ok"] else ("NOT MEASURED: " + t["skipped"] if t.get("skipped") else "MISSED")
        out.append(f"{t['text']:<62} {_fmt(t['value'], t['unit']):>12} {_fmt(t['limit'], t['unit']):>10}  "
                   f"{verdict}")
    out.append("")
    out.append(f"total time {report['elapsed_s']:.0f} s; {report['wrapper_runs']} wrapper runs"
               + ("; INTERRUPTED: only the scenarios above completed" if report.get("interrupted") else ""))
    return "\n".join(out)


def _extra_lines(sc: dict[str, Any]) -> list[str]:
    lines = []
    mt = sc.get("metrics") or {}
    if sc["name"].startswith("copy-"):
        lines.append(f"throughput: atomic-publish {mt['publish_mib_per_s']:.0f} MiB/s, "
                     f"cp -r + sync -f {mt['baseline_mib_per_s']:.0f} MiB/s")
    if sc["name"] == "small-files":
        for n, v in mt["per_size"].items():
            lines.append(f"{n} files: {v['publish_ms_per_file']:.3f} ms/file (cp {v['baseline_ms_per_file']:.3f}), "
                         f"peak RSS {v['peak_rss_mb']:.0f} MB ({v['rss_kb_per_file']:.2f} KB per file)")
    if sc["name"] == "overhead":
        lines.append(f"overhead over python -c pass: publish {mt['overhead_s']:.3f} s; "
                     f"CLI start alone {mt['cli_start_over_python_s']:.3f} s")
    if sc["name"] == "resume":
        for r in mt["rounds"]:
            lines.append(f"{r['signal']}: {r['saved_files']} saved ({100 * r['fraction']:.0f}%), "
                         f"retry reused {r['reused_files']} and copied {r['copied_files']} in {r['retry_s']:.2f} s")
    if sc["name"] == "metadata" and mt.get("by_call"):
        lines.append("per published file: " + ", ".join(f"{k} {v:g}" for k, v in mt["by_call"].items() if v))
    if sc["name"] == "commands":
        for n, names in mt.items():
            lines.append(f"{n}: " + ", ".join(f"{k} {v}" for k, v in names.items()))
    return lines


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    t0 = time.perf_counter()
    bench = Bench(parent=args.dir, store_uri=args.store, keep=args.keep, profile_dir=args.profile)

    def on_term(signum, _frame):  # a Ctrl-C or kill still stops the store and the children
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = signal.signal(signal.SIGTERM, on_term)
    report: dict[str, Any] = {"quick": args.quick, "repeat": args.repeat, "scenarios": [], "targets": [],
                              "store": "?"}
    code = 0
    try:
        report["machine"] = machine(str(bench.root))
        report["strace"] = shutil.which("strace")
        log(f"temporary folder {bench.root}")
        report["store"] = bench.start_store()
        report["store"] += f"; databases {bench.database}, {bench.state_database}"
        log(f"store: {report['store']}")
        data = Data(bench, sizes)
        warm = bench.manifest("warmup", "warmup", data.files("warm", 1, 4096, ext="mov"))
        bench.remove_published(bench.publish(warm, bench.job_id("warmup")).result())  # byte-compile, warm the store
        for name in args.scenarios:
            log(f"scenario {name}")
            try:
                result = SCENARIOS[name](bench, data, args.repeat)
            except Exception as exc:  # noqa: BLE001 - report it and go on with the others
                bench.runner.kill_all()
                log(f"scenario {name} failed: {exc}")
                result = {"name": name, "title": name, "error": str(exc)[:2000], "targets": []}
                code = 1
            report["scenarios"].append(result)
            report["targets"] += [{**t, "scenario": name} for t in result["targets"]]
    except KeyboardInterrupt:
        log("interrupted; stopping what the benchmark started")
        code = 130
    finally:
        signal.signal(signal.SIGTERM, old)
        report["wrapper_runs"] = bench.wrapper_runs
        report["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        bench.close()
        report["elapsed_s"] = round(time.perf_counter() - t0, 1)
        report["kept_dir"] = str(bench.root) if args.keep else None
    report["interrupted"] = code == 130
    if "machine" not in report:
        return code
    report["all_targets_met"] = all(t["ok"] for t in report["targets"]) and code == 0
    if args.output:
        Path(args.output).write_text(json.dumps(report, sort_keys=True, default=str, indent=1) + "\n")
    if args.json:
        print(json.dumps(report, sort_keys=True, default=str))
    else:
        print(table(report))
    return code


if __name__ == "__main__":
    sys.exit(main())
