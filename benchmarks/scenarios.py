"""The scenarios of the benchmark. Each runs its measurement and its baseline alternately
(A B, B A, ...) ``repeat`` times and returns series (median, spread), metrics and targets."""
from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import KIB, MIB, Bench, Proc, log, settle, summary

CP_NOTE = ("baseline = `cp -r SRC DST && sync -f DST` into a new folder on the same filesystem (sync -f: one "
           "syncfs of that filesystem); a `sync` before every measured run of either side")


@dataclass
class Sizes:
    copy_counts: tuple[int, ...] = (128, 512)
    copy_size: int = 4 * MIB
    small: tuple[tuple[int, int, float], ...] = ((10001, 4 * KIB, 150.0), (50000, 1 * KIB, 200.0))  # count, size, RSS MB
    one_size: int = 4 * KIB
    overhead_rounds: int = 5
    meta_files: int = 1001  # and 101
    command_counts: tuple[int, ...] = (1, 1000, 10000)
    publishers: int = 16
    conc_files: int = 8
    conc_size: int = 1 * MIB


FULL = Sizes()
QUICK = Sizes(copy_counts=(32, 64), copy_size=1 * MIB, small=((1001, 4 * KIB, 150.0), (2000, 1 * KIB, 200.0)),
              overhead_rounds=3, meta_files=201, command_counts=(1, 100, 1000), publishers=8, conc_files=2,
              conc_size=256 * KIB)
COPY_TARGETS = {128: 1.0, 512: 0.9}  # the targets against `cp -r` + `sync -f`, by file count


class Data:
    """Source files, made once per benchmark run and shared by the scenarios."""

    def __init__(self, bench: Bench, sizes: Sizes):
        self.bench, self.sizes = bench, sizes
        self._cache: dict[str, list[str]] = {}

    def files(self, name: str, count: int, size: int, ext: str = "exr") -> list[str]:
        if name not in self._cache:
            log(f"creating {count} files of {_size(size)} ({name})")
            self._cache[name] = self.bench.make_files(name, count, size, ext=ext)
            settle()
        return self._cache[name]

    def folder(self, name: str) -> Path:
        return self.bench.data / name


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB and n % MIB == 0 else f"{n // KIB} KiB"


def _alternate(rounds: int, a: Callable[[], None], b: Callable[[], None]) -> None:
    """A B, B A, A B, ...: neither side always runs right after the same thing."""
    for r in range(rounds):
        first, second = (a, b) if r % 2 == 0 else (b, a)
        first()
        second()


def _phases(procs: list[Proc]) -> dict[str, float]:
    """Median of each phase over ``procs``."""
    table: dict[str, list[float]] = {}
    for p in procs:
        for k, v in p.phases().items():
            table.setdefault(k, []).append(v)
    return {k: round(statistics.median(v), 4) for k, v in table.items()}


def _series(label: str, samples: list[float], unit: str = "s", **extra: Any) -> dict[str, Any]:
    return {"label": label, "unit": unit, **summary(samples), **extra}


def _target(ident: str, text: str, value: float | None, limit: float, unit: str,
            skipped: str | None = None) -> dict[str, Any]:
    ok = value is not None and value <= limit
    return {"id": ident, "text": text, "value": None if value is None else round(value, 4), "limit": limit,
            "unit": unit, "ok": ok, **({"skipped": skipped} if skipped else {})}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _timed_pair(bench: Bench, data: Data, name: str, repeat: int, publish_label: str, manifest: Path,
                check: Callable[[dict[str, Any]], None] | None = None) -> tuple[list[Proc], list[Proc]]:
    """Publishes of ``manifest`` and `cp -r` + `sync -f` of the folder ``name``, alternated, each
    measured run preceded by a sync."""
    pubs: list[Proc] = []
    bases: list[Proc] = []

    def publish() -> None:
        settle()
        p = bench.publish(manifest, bench.job_id(name))
        res = p.result() or {}
        if check:
            check(res)
        pubs.append(p)
        log(f"{publish_label}: publish {p.wall:.3f} s (peak RSS {p.maxrss_bytes / 1e6:.0f} MB)")
        bench.remove_published(res)

    def baseline() -> None:
        p = bench.cp_baseline(data.folder(name))
        bases.append(p)
        log(f"{publish_label}: cp -r + sync -f {p.wall:.3f} s")

    _alternate(repeat, publish, baseline)
    return pubs, bases


# -- copy mode / hardlink ------------------------------------------------------------------------
def _copy(count: int) -> Callable[[Bench, Data, int], dict[str, Any]]:
    def scenario(bench: Bench, data: Data, repeat: int) -> dict[str, Any]:
        s = data.sizes
        n = s.copy_counts[0] if count == 128 else s.copy_counts[-1]
        name = f"copy{n}"
        files = data.files(name, n, s.copy_size)
        manifest = bench.manifest(name, f"copy{n}", files, project=f"bench_copy{n}", link_mode="copy")
        pubs, bases = _timed_pair(bench, data, name, repeat, f"copy {n}", manifest)
        pub = _series(f"atomic-publish, copy mode ({n} x {_size(s.copy_size)})", [p.wall for p in pubs],
                      peak_rss_mb=max(p.maxrss_bytes for p in pubs) / 1e6, phases=_phases(pubs))
        base = _series("baseline: cp -r + sync -f", [p.wall for p in bases])
        ratio = _ratio(pub["median"], base["median"])
        total = n * s.copy_size
        limit = COPY_TARGETS[count]
        return {"name": f"copy-{count}", "title": f"copy {n} files", "note": CP_NOTE,
                "series": {"publish": pub, "baseline": base}, "ratios": {"publish": ratio},
                "metrics": {"bytes": total, "publish_mib_per_s": total / MIB / pub["median"],
                            "baseline_mib_per_s": total / MIB / base["median"]},
                "targets": [_target(f"copy-{count}", f"{n} x {_size(s.copy_size)} copy mode <= {limit:g} x "
                                    "cp -r + sync -f", ratio, limit, "x")]}
    return scenario


def hardlink(bench: Bench, data: Data, repeat: int) -> dict[str, Any]:
    s = data.sizes
    n = s.copy_counts[-1]
    name = f"copy{n}"
    files = data.files(name, n, s.copy_size)
    manifest = bench.manifest("hardlink", "hardlink", files, project="bench_link", link_mode="hardlink")

    def check(res: dict[str, Any]) -> None:
        if res.get("linked_files") != n or res.get("copied_files") != 0:
            raise RuntimeError(f"hardlink publish linked {res.get('linked_files')} and copied "
                               f"{res.get('copied_files')} of {n} files")

    pubs, bases = _timed_pair(bench, data, name, repeat, "hardlink", manifest, check)
    pub = _series(f"atomic-publish, hardlink mode ({n} x {_size(s.copy_size)})", [p.wall for p in pubs],
                  peak_rss_mb=max(p.maxrss_bytes for p in pubs) / 1e6, phases=_phases(pubs))
    base = _series("baseline: cp -r + sync -f of the same files (a copy)", [p.wall for p in bases])
    ratio = _ratio(pub["median"], base["median"])
    return {"name": "hardlink", "title": "hardlink", "note": "every file hard-linked (linked_files checked, "
            "copied_files 0); the baseline is the copy of the same files",
            "series": {"publish": pub, "baseline": base}, "ratios": {"publish": ratio}, "metrics": {},
            "targets": [_target("hardlink", f"hardlink {n} files <= 0.15 x the copy baseline", ratio, 0.15, "x")]}


# -- resume ------------------------------------------------------------------------------------
def resume(bench: Bench, data: Data, repeat: int) -> dict[str, Any]:
    import signal

    s = data.sizes
    n = s.copy_counts[-1]
    name = f"copy{n}"
    files = data.files(name, n, s.copy_size)
    manifest = bench.manifest("resume", "resume", files, project="bench_resume", link_mode="copy")
    fulls: list[Proc] = []
    retries: dict[str, list[Proc]] = {"SIGTERM": [], "SIGKILL": []}
    rounds: list[dict[str, Any]] = []

    def full() -> None:
        settle()
        p = bench.publish(manifest, bench.job_id("full-res"))
        fulls.append(p)
        log(f"resume: full publish {p.wall:.3f} s")
        bench.remove_published(p.result())

    def stopped_and_retried() -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            job = bench.job_id(f"resume-{sig.name}")
            settle()
            k = bench.publish_signalled(manifest, job, sig, 0.5, n)
            saved = bench.status(job)["files"]["count"]
            settle()
            r = bench.publish(manifest, job)
            res = r.result() or {}
            retries[sig.name].append(r)
            rounds.append({"signal": sig.name, "saved_files": saved, "fraction": round(saved / n, 3),
                           "reused_files": res.get("reused_files"), "copied_files": res.get("copied_files"),
                           "stopped_attempt_s": round(k.wall, 3), "stopped_exit": k.exit_code,
                           "retry_s": round(r.wall, 3)})
            log(f"resume: {sig.name} at half, {saved}/{n} files saved; retry {r.wall:.3f} s "
                f"({res.get('reused_files')} reused, {res.get('copied_files')} copied)")
            bench.remove_published(res)

    _alternate(repeat, full, stopped_and_retried)
    full_s = _series(f"full publish ({n} x {_size(s.copy_size)}, copy)", [p.wall for p in fulls],
                     phases=_phases(fulls))
    series = {"baseline": full_s}
    ratios: dict[str, float | None] = {}
    targets = []
    for sig, procs in retries.items():
        key = f"retry_{sig.lower()}"
        series[key] = _series(f"retry after {sig} at 50 %", [p.wall for p in procs], phases=_phases(procs))
        ratios[key] = _ratio(series[key]["median"], full_s["median"])
        targets.append(_target(f"resume-{sig.lower()}", f"retry after {sig} at 50 % <= 0.55 x a full publish",
                               ratios[key], 0.55, "x"))
    return {"name": "resume", "title": "resume",
            "note": "the signal is sent once half the files are in the staging folder; the retry is timed",
            "series": series, "ratios": ratios, "metrics": {"rounds": rounds}, "targets": targets}


# -- many small files -------------------------------------------------------------------------------
def small_files(bench: Bench, data: Data, repeat: int) -> dict[str, Any]:
    s = data.sizes
    series: dict[str, Any] = {}
    ratios: dict[str, float | None] = {}
    per: dict[str, dict[str, Any]] = {}
    targets = []
    for n, size, rss_limit in s.small:
        name = f"small{n}x{size}"
        files = data.files(name, n, size)
        manifest = bench.manifest(name, f"small{n}x{size}", files, project=f"bench_small{n}")
        pubs, bases = _timed_pair(bench, data, name, repeat, f"{n} x {_size(size)}", manifest)
        peak = round(max(p.maxrss_bytes for p in pubs) / 1e6, 1)
        pub = _series(f"atomic-publish {n} x {_size(size)}", [p.wall for p in pubs], peak_rss_mb=peak,
                      phases=_phases(pubs))
        base = _series(f"baseline: cp -r + sync -f, {n} files", [p.wall for p in bases])
        series[f"publish_{n}"], series[f"baseline_{n}"] = pub, base
        ratio = ratios[f"publish_{n}"] = _ratio(pub["median"], base["median"])
        per[str(n)] = {"files": n, "publish_ms_per_file": 1000 * pub["median"] / n,
                       "baseline_ms_per_file": 1000 * base["median"] / n, "peak_rss_mb": peak,
                       "rss_kb_per_file": 1000 * peak / n}
        targets.append(_target(f"small-{n}", f"{n} x {_size(size)} <= 3 x cp -r + sync -f", ratio, 3.0, "x"))
        targets.append(_target(f"small-{n}-rss", f"peak RSS, {n} files <= {rss_limit:g} MB", peak, rss_limit, "MB"))
    return {"name": "small-files", "title": "many small files", "note": CP_NOTE, "series": series,
            "ratios": ratios, "metrics": {"per_size": per}, "targets": targets}


# -- one-file overhead ---------------------------------------------------------------------------
def overhead(bench: Bench, data: Data, repeat: int) -> dict[str, Any]:
    s = data.sizes
    files = data.files("one", 1, s.one_size, ext="mov")
    manifest = bench.manifest("one", "oneFile", files, project="bench_one")
    pubs: list[Proc] = []
    passes: list[Proc] = []
    clis: list[Proc] = []

    def publish() -> None:
        settle()
        p = bench.publish(manifest, bench.job_id("one"))
        pubs.append(p)
        bench.remove_published(p.result())

    def baseline() -> None:
        settle()
        passes.append(bench.python_pass())
        clis.append(bench.runner.run([*bench.cli, "failpoints"], bench.env))  # the CLI alone: interpreter + imports

    rounds = max(repeat, s.overhead_rounds)
    _alternate(rounds, publish, baseline)
    pub = _series(f"one-file publish ({_size(s.one_size)}) end to end", [p.wall for p in pubs],
                  peak_rss_mb=max(p.maxrss_bytes for p in pubs) / 1e6, phases=_phases(pubs))
    base = _series("baseline: python -c pass", [p.wall for p in passes])
    cli = _series("`atomic-publish failpoints` (CLI start, no store)", [p.wall for p in clis])
    over = pub["median"] - base["median"]
    log(f"overhead: publish {pub['median']:.3f} s, python -c pass {base['median']:.3f} s, "
        f"CLI start {cli['median']:.3f} s")
    return {"name": "overhead", "title": "one-file overhead",
            "note": "process start included; the store is already running (embedded: found through "
                    "ATOMIC_PUBLISH_HOME, as a worker would)",
            "series": {"publish": pub, "baseline": base, "cli_start": cli},
            "ratios": {"publish": _ratio(pub["median"], base["median"]),
                       "cli_start": _ratio(cli["median"], base["median"])},
            "metrics": {"overhead_s": over, "cli_start_over_python_s": cli["median"] - base["median"]},
            "targets": [_target("overhead", "one-file publish over `python -c pass` <= 0.15 s", over, 0.15, "s")]}


# -- round trips: filesystem metadata calls and store commands -------------------------------------
def metadata(bench: Bench, data: Data, repeat: int) -> dict[str, Any]:
    """Metadata calls per published file: (calls of an N-file run - calls of an M-file run) / (N - M)
    with M = N / 10, for a publish and for `cp -r`, so that the interpreter's imports (thousands of
    stats, the same for every publish) and what a publish does once (its threads) are not spread
    over the files."""
    s = data.sizes
    n = s.meta_files
    m = (n - 1) // 10 + 1
    files = data.files(f"meta{n}", n, 4 * KIB)
    data.files(f"meta{m}", m, 4 * KIB)
    note = (f"strace -c -f, calls {', '.join(('stat family', 'open', 'access'))}; per file = (calls for {n} "
            f"files - calls for {m} files) / {n - m}; the total per file includes the interpreter's start")
    import shutil as _sh

    if not _sh.which("strace"):
        msg = "strace is not installed (Debian: apt-get install -y strace): metadata calls not measured"
        log(msg)
        return {"name": "metadata", "title": "metadata calls", "note": msg, "series": {}, "ratios": {},
                "metrics": {"strace": False},
                "targets": [_target("metadata", "metadata calls per published file <= 5 (strace missing)",
                                    None, 5.0, "calls", skipped=msg)]}
    counts: dict[str, dict[str, int]] = {}
    for label, fl in (("m", files[:m]), ("n", files)):
        manifest = bench.manifest(f"meta-{label}", f"meta{label}", fl, project="bench_meta")
        job = bench.job_id("meta")
        c = bench.strace_counts(bench.publish_argv(manifest, job))
        if c is None:
            raise RuntimeError("strace vanished")
        counts[f"publish_{label}"] = c
        bench.remove_published({"final_dir": _final_dir(bench, job)})
    for label, folder in (("m", data.folder(f"meta{m}")), ("n", data.folder(f"meta{n}"))):
        dst = bench.scratch / f"meta-cp-{label}"
        c = bench.strace_counts(["cp", "-r", "--", str(folder), str(dst)])
        counts[f"cp_{label}"] = c or {}
        _sh.rmtree(dst, ignore_errors=True)
    settle()

    def per_file(side: str) -> float:
        return (sum(counts[f"{side}_n"].values()) - sum(counts[f"{side}_m"].values())) / (n - m)

    pub, cp = per_file("publish"), per_file("cp")
    by_call = {k: round((counts["publish_n"].get(k, 0) - counts["publish_m"].get(k, 0)) / (n - m), 2)
               for k in sorted(set(counts["publish_n"]) | set(counts["publish_m"]))}
    series = {"publish": _series(f"publish: metadata calls per file ({m} to {n} files)", [pub], unit="calls",
                                 by_call=by_call, total_per_file=round(sum(counts["publish_n"].values()) / n, 2)),
              "baseline": _series("cp -r: metadata calls per file", [cp], unit="calls")}
    return {"name": "metadata", "title": "metadata calls", "note": note, "series": series,
            "ratios": {"publish": _ratio(pub, cp)}, "metrics": {"counts": counts, "by_call": by_call},
            "targets": [_target("metadata", "metadata calls per published file <= 5", pub, 5.0, "calls")]}


def _final_dir(bench: Bench, job: str) -> str | None:
    try:
        return bench.status(job).get("final_dir")
    except RuntimeError:
        return None


def commands(bench: Bench, data: Data, repeat: int) -> dict[str, Any]:
    """MongoDB commands sent by one publish (pymongo command monitoring in the wrapper process,
    ATOMIC_PUBLISH_COMMAND_LOG) for 1, 1,000 and 10,000 files, and for an already-published retry.

    The measured publish is a new version of a subset that has one already (the everyday publish
    on a farm); the first version of a new subset, which also creates the subset document and
    the project's index, is shown beside it."""
    from atomic_publish.idempotency.command_log import ENV, read_counts, staged_saves

    s = data.sizes
    big_n, big_size, _ = s.small[0]
    pool = data.files(f"small{big_n}x{big_size}", big_n, big_size)
    series: dict[str, Any] = {}
    targets = []
    metrics: dict[str, Any] = {}
    retry_count = None
    for n in s.command_counts:
        manifest = bench.manifest(f"cmd-{n}", f"commands{n}", pool[:n], project="bench_commands")
        first_job = bench.job_id(f"cmd{n}-first")
        first_path = str(bench.root / f"commands-{first_job}.log")
        bench.remove_published(bench.publish(manifest, first_job, {ENV: first_path}).result())
        first = read_counts(first_path)
        series[f"first_{n}"] = _series(f"MongoDB commands, first version of a new subset, {n} files", [len(first)],
                                       unit="commands")
        job = bench.job_id(f"cmd{n}")
        path = str(bench.root / f"commands-{job}.log")
        p = bench.publish(manifest, job, {ENV: path})
        names = read_counts(path)
        series[f"publish_{n}"] = _series(f"MongoDB commands, publish of {n} files", [len(names)], unit="commands")
        metrics[str(n)] = {k: names.count(k) for k in sorted(set(names))}
        metrics[str(n)]["staged_files saves"] = staged_saves(path)
        targets.append(_target(f"commands-{n}", f"MongoDB commands, publish of {n} files <= 20", len(names),
                               20.0, "commands"))
        if n == s.command_counts[0]:
            again = str(bench.root / f"commands-{job}-retry.log")
            r = bench.publish(manifest, job, {ENV: again}, expect_ok=False)
            if (r.result() or {}).get("outcome") != "already-published":
                raise RuntimeError(f"the retry of {job} did not answer already-published: {r.stdout[-500:]}")
            names = read_counts(again)
            retry_count = len(names)
            metrics["already_published"] = {k: names.count(k) for k in sorted(set(names))}
        bench.remove_published(p.result())
    series["already"] = _series("MongoDB commands, already-published retry", [retry_count], unit="commands")
    targets.append(_target("commands-retry", "MongoDB commands, already-published retry <= 3", retry_count, 3.0,
                           "commands"))
    return {"name": "commands", "title": "store commands",
            "note": "pymongo command monitoring in the wrapper (ATOMIC_PUBLISH_COMMAND_LOG); every command is "
                    "a round trip", "series": series, "ratios": {}, "metrics": metrics, "targets": targets}


# -- concurrency -------------------------------------------------------------------------------
def concurrency(bench: Bench, data: Data, repeat: int) -> dict[str, Any]:
    s = data.sizes
    files = data.files("conc", s.conc_files, s.conc_size)
    manifest = bench.manifest("conc", "concurrency", files, project="bench_conc")
    seq_times: list[float] = []
    conc_times: list[float] = []
    conc_procs: list[Proc] = []
    seq_procs: list[Proc] = []
    problems: list[str] = []
    all_versions: list[int] = []

    def check(batch: list[Proc], label: str) -> None:
        versions = []
        for p in batch:
            res = p.result() or {}
            if p.exit_code != 0 or res.get("outcome") != "published":
                problems.append(f"{label}: exit {p.exit_code} signal {p.signal}: {res.get('message') or p.stderr()[-300:]}")
            else:
                versions.append(res["version"])
        if len(set(versions)) != len(versions):
            problems.append(f"{label}: duplicate versions {sorted(versions)}")
        all_versions.extend(versions)
        bench.remove_published(*[p.result() for p in batch])

    def sequential() -> None:
        t0 = _now()
        batch = [bench.publish(manifest, bench.job_id("seq"), expect_ok=False) for _ in range(s.publishers)]
        seq_times.append(_now() - t0)
        seq_procs.extend(batch)
        log(f"concurrency: {s.publishers} sequential {seq_times[-1]:.2f} s")
        check(batch, "sequential")

    def concurrent() -> None:
        t0 = _now()
        spawned = [bench.publish_spawn(manifest, bench.job_id("conc")) for _ in range(s.publishers)]
        batch = [bench.runner.wait(p) for p in spawned]
        conc_times.append(_now() - t0)
        conc_procs.extend(batch)
        log(f"concurrency: {s.publishers} concurrent {conc_times[-1]:.2f} s")
        check(batch, "concurrent")

    _alternate(repeat, concurrent, sequential)
    if len(set(all_versions)) != len(all_versions):
        problems.append("versions repeated across batches")
    conc = _series(f"{s.publishers} publishers at once ({s.conc_files} x {_size(s.conc_size)} each)", conc_times,
                   peak_rss_mb=max(p.maxrss_bytes for p in conc_procs) / 1e6, phases=_phases(conc_procs),
                   slowest_single_s=max(p.wall for p in conc_procs))
    seq = _series(f"baseline: the same {s.publishers} one after another", seq_times, phases=_phases(seq_procs))
    ratio = _ratio(conc["median"], seq["median"])
    targets = [_target("concurrency", f"{s.publishers} concurrent publishers <= 1.0 x sequential", ratio, 1.0, "x"),
               _target("concurrency-versions", "every publisher published, all versions distinct",
                       float(len(problems)), 0.0, "problems")]
    return {"name": "concurrency", "title": "concurrency",
            "note": f"one subset, distinct job ids; {len(all_versions)} publishes got "
                    f"{len(set(all_versions))} distinct versions" + (f"; PROBLEMS: {problems}" if problems else ""),
            "series": {"concurrent": conc, "baseline": seq}, "ratios": {"concurrent": ratio},
            "metrics": {"problems": problems, "versions": sorted(all_versions)}, "targets": targets}


def _now() -> float:
    import time

    return time.perf_counter()


SCENARIOS: dict[str, Callable[[Bench, Data, int], dict[str, Any]]] = {
    "copy-128": _copy(128),
    "copy-512": _copy(512),
    "hardlink": hardlink,
    "resume": resume,
    "small-files": small_files,
    "overhead": overhead,
    "metadata": metadata,
    "commands": commands,
    "concurrency": concurrency,
}
