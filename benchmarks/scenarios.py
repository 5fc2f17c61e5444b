"""The scenarios of the benchmark. Each runs its measurement and its baseline alternately
(A B, B A, ...) ``repeat`` times and returns series (median, spread), metrics and targets."""
from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import KIB, MIB, Bench, Proc, log, settle, summary

CP_NOTE = ("baseline = `cp -r` of the same files into a new folder on the same filesystem, then `sync` of "
           "every copied file and folder (fsync), because atomic-publish fsyncs each staged file: like with like")


@dataclass
class Sizes:
    full_files: int = 512
    full_size: int = 4 * MIB
    small_counts: tuple[int, int] = (1000, 10000)
    small_size: int = 4 * KIB
    one_size: int = 4 * KIB
    overhead_rounds: int = 5
    publishers: int = 16
    conc_files: int = 8
    conc_size: int = 1 * MIB


FULL = Sizes()
QUICK = Sizes(full_files=48, full_size=1 * MIB, small_counts=(100, 1000), overhead_rounds=3,
              publishers=16, conc_files=2, conc_size=256 * KIB)


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


def _target(ident: str, text: str, value: float | None, limit: float, unit: str) -> dict[str, Any]:
    ok = value is not None and value <= limit
    return {"id": ident, "text": text, "value": None if value is None else round(value, 4), "limit": limit,
            "unit": unit, "ok": ok}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# -- full copy / hardlink ------------------------------------------------------------------------
def full_copy(bench: Bench, data: Data, repeat: int) -> dict[str, Any]:
    s = data.sizes
    files = data.files("full", s.full_files, s.full_size)
    manifest = bench.manifest("full", "fullCopy", files, project="bench_full", link_mode="copy")
    pubs: list[Proc] = []
    bases: list[Proc] = []

    def publish() -> None:
        p = bench.publish(manifest, bench.job_id("full"))
        pubs.append(p)
        log(f"full copy: publish {p.wall:.2f} s (peak RSS {p.maxrss_bytes / 1e6:.0f} MB)")
        bench.remove_published(p.result())

    def baseline() -> None:
        p = bench.cp_baseline(data.folder("full"))
        bases.append(p)
        log(f"full copy: cp -r + sync {p.wall:.2f} s")
        settle()

    _alternate(repeat, publish, baseline)
    pub = _series(f"atomic-publish, copy mode ({s.full_files} x {_size(s.full_size)}, fsync)", [p.wall for p in pubs],
                  peak_rss_mb=max(p.maxrss_bytes for p in pubs) / 1e6, phases=_phases(pubs))
    base = _series("baseline: cp -r + sync of the copy", [p.wall for p in bases])
    ratio = _ratio(pub["median"], base["median"])
    total = s.full_files * s.full_size
    return {"name": "full-copy", "title": "full copy", "note": CP_NOTE,
            "series": {"publish": pub, "baseline": base},
            "ratios": {"publish": ratio},
            "metrics": {"bytes": total, "publish_mib_per_s": total / MIB / pub["median"],
                        "baseline_mib_per_s": total / MIB / base["median"]},
            "targets": [_target("full-copy", "full copy <= 1.15 x baseline", ratio, 1.15, "x")]}


def hardlink(bench: Bench, data: Data, repeat: int) -> dict[str, Any]:
    s = data.sizes
    files = data.files("full", s.full_files, s.full_size)
    manifest = bench.manifest("hardlink", "hardlink", files, project="bench_link", link_mode="hardlink")
    pubs: list[Proc] = []
    bases: list[Proc] = []

    def publish() -> None:
        p = bench.publish(manifest, bench.job_id("link"))
        res = p.result() or {}
        if res.get("linked_files") != s.full_files:
            raise RuntimeError(f"hardlink publish linked {res.get('linked_files')} of {s.full_files} files")
        pubs.append(p)
        log(f"hardlink: publish {p.wall:.2f} s")
        bench.remove_published(res)

    def baseline() -> None:
        p = bench.cp_baseline(data.folder("full"))
        bases.append(p)
        log(f"hardlink: cp -r + sync {p.wall:.2f} s")
        settle()

    _alternate(repeat, publish, baseline)
    pub = _series(f"atomic-publish, hardlink mode ({s.full_files} files)", [p.wall for p in pubs],
                  peak_rss_mb=max(p.maxrss_bytes for p in pubs) / 1e6, phases=_phases(pubs))
    base = _series("baseline: cp -r + sync of the copy (full-copy baseline)", [p.wall for p in bases])
    ratio = _ratio(pub["median"], base["median"])
    return {"name": "hardlink", "title": "hardlink", "note": "same files and baseline as full copy; "
            "every file is hard-linked (linked_files checked)",
            "series": {"publish": pub, "baseline": base}, "ratios": {"publish": ratio}, "metrics": {},
            "targets": [_target("hardlink", "hardlink <= 0.10 x the full-copy baseline", ratio, 0.10, "x")]}


# -- resume ------------------------------------------------------------------------------------
def resume(bench: Bench, data: Data, repeat: int) -> dict[str, Any]:
    from atomic_publish.wrapper.staging import CHECKPOINT_FILES, CHECKPOINT_SECONDS

    s = data.sizes
    files = data.files("full", s.full_files, s.full_size)
    manifest = bench.manifest("resume", "resume", files, project="bench_resume", link_mode="copy")
    half = s.full_files / 2
    fulls: list[Proc] = []
    retries: list[Proc] = []
    killed: list[Proc] = []
    rounds: list[dict[str, Any]] = []
    state: dict[str, Any] = {"per_checkpoint": None, "nth": None, "fallback": False}

    def full() -> None:
        p = bench.publish(manifest, bench.job_id("full-res"))
        fulls.append(p)
        stage_s = p.phases().get("stage")
        if state["per_checkpoint"] is None and stage_s:
            rate = s.full_files / stage_s
            state["per_checkpoint"] = min(CHECKPOINT_FILES, rate * CHECKPOINT_SECONDS)
        log(f"resume: full publish {p.wall:.2f} s")
        bench.remove_published(p.result())

    def kill_and_retry() -> None:
        if state["per_checkpoint"] is None:
            full()  # calibration: how many files one checkpoint holds on this machine
            fulls.pop()
        for _ in range(6):
            if state["fallback"]:
                # no checkpoint is ever hit (the whole copy takes less than one checkpoint interval):
                # kill after half the files instead; then little or nothing is checkpointed
                nth, spec = None, f"stage.file=kill@{int(half)}"
            else:
                nth = state["nth"] or max(1, round(half / state["per_checkpoint"]))
                spec = f"stage.checkpoint=kill@{nth}"
            job = bench.job_id("resume")
            k = bench.publish(manifest, job, {"ATOMIC_PUBLISH_FAILPOINTS": spec}, expect_ok=False)
            if k.signal is not None:
                break
            # it finished before the Nth checkpoint: fewer, larger checkpoints than expected
            bench.remove_published(k.result())
            if state["fallback"]:
                raise RuntimeError(f"{spec} did not kill the attempt")
            if nth == 1:
                state["fallback"] = True
            else:
                state["nth"] = max(1, nth // 2)
        else:
            raise RuntimeError("could not kill an attempt half-way (stage.checkpoint never reached)")
        saved = bench.status(job)["files"]["count"]
        settle()
        r = bench.publish(manifest, job)
        res = r.result() or {}
        killed.append(k)
        retries.append(r)
        rounds.append({"failpoint": spec, "checkpointed_files": saved, "fraction": round(saved / s.full_files, 3),
                       "reused_files": res.get("reused_files"), "copied_files": res.get("copied_files"),
                       "killed_attempt_s": round(k.wall, 3), "retry_s": round(r.wall, 3)})
        log(f"resume: killed by {spec} with {saved}/{s.full_files} files saved; retry {r.wall:.2f} s "
            f"({res.get('reused_files')} reused, {res.get('copied_files')} copied)")
        # aim the next round at half
        if nth is not None:
            state["nth"] = max(1, round(nth * half / saved)) if saved else nth + 1
        bench.remove_published(res)

    _alternate(repeat, full, kill_and_retry)
    full_s = _series(f"full publish ({s.full_files} x {_size(s.full_size)}, copy)", [p.wall for p in fulls],
                     phases=_phases(fulls))
    retry_s = _series("retry after a kill at about half", [p.wall for p in retries], phases=_phases(retries))
    kill_s = _series("the killed attempt (until SIGKILL)", [p.wall for p in killed])
    ratio = _ratio(retry_s["median"], full_s["median"])
    fractions = [r["fraction"] for r in rounds]
    return {"name": "resume", "title": "resume",
            "note": f"killed with ATOMIC_PUBLISH_FAILPOINTS=stage.checkpoint=kill@N (checkpoints every "
                    f"{CHECKPOINT_SECONDS:g} s or {CHECKPOINT_FILES} files, so N is picked from the measured copy "
                    f"rate); checkpointed fraction per round: {fractions}",
            "series": {"baseline": full_s, "retry": retry_s, "killed": kill_s},
            "ratios": {"retry": ratio}, "metrics": {"rounds": rounds},
            "targets": [_target("resume", "retry after half <= 0.60 x a full publish", ratio, 0.60, "x")]}


# -- many small files -------------------------------------------------------------------------------
def small_files(bench: Bench, data: Data, repeat: int) -> dict[str, Any]:
    s = data.sizes
    series: dict[str, Any] = {}
    per: dict[int, dict[str, Any]] = {}
    for n in s.small_counts:
        name = f"small{n}"
        files = data.files(name, n, s.small_size)
        manifest = bench.manifest(name, f"small{n}", files, project=f"bench_small{n}")
        pubs: list[Proc] = []
        bases: list[Proc] = []

        def publish(n: int = n, manifest: Path = manifest, pubs: list[Proc] = pubs) -> None:
            p = bench.publish(manifest, bench.job_id(f"small{n}"))
            pubs.append(p)
            log(f"small files: {n} publish {p.wall:.2f} s, peak RSS {p.maxrss_bytes / 1e6:.0f} MB")
            bench.remove_published(p.result())

        def baseline(n: int = n, name: str = name, bases: list[Proc] = bases) -> None:
            p = bench.cp_baseline(data.folder(name))
            bases.append(p)
            log(f"small files: {n} cp -r + sync {p.wall:.2f} s")
            settle()

        _alternate(repeat, publish, baseline)
        pub = _series(f"atomic-publish {n} x {_size(s.small_size)}", [p.wall for p in pubs],
                      peak_rss_mb=round(max(p.maxrss_bytes for p in pubs) / 1e6, 1), phases=_phases(pubs))
        base = _series(f"baseline: cp -r + sync, {n} files", [p.wall for p in bases])
        series[f"publish_{n}"] = pub
        series[f"baseline_{n}"] = base
        per[n] = {"files": n, "publish_ms_per_file": 1000 * pub["median"] / n,
                  "baseline_ms_per_file": 1000 * base["median"] / n,
                  "overhead_ms_per_file": 1000 * (pub["median"] - base["median"]) / n,
                  "peak_rss_mb": pub["peak_rss_mb"], "ratio_to_cp": _ratio(pub["median"], base["median"])}
    lo, hi = s.small_counts
    scale = _ratio(series[f"publish_{hi}"]["median"], series[f"publish_{lo}"]["median"])
    limit_scale = 1.2 * hi / lo  # 12 x for 10,000 vs 1,000
    peak = max(per[n]["peak_rss_mb"] for n in s.small_counts)
    return {"name": "small-files", "title": "many small files", "note": CP_NOTE,
            "series": series,
            "ratios": {f"publish_{n}": per[n]["ratio_to_cp"] for n in s.small_counts},
            "metrics": {"per_size": {str(n): v for n, v in per.items()}, "scale_ratio": scale},
            "targets": [
                _target("small-scale", f"{hi} small files <= {limit_scale:g} x the {lo}-file time", scale, limit_scale, "x"),
                _target("small-rss", f"peak RSS of the wrapper ({hi} files) <= 250 MB", peak, 250.0, "MB"),
                _target("small-per-file", f"per-file overhead over cp ({hi} files) <= 2 ms",
                        per[hi]["overhead_ms_per_file"], 2.0, "ms"),
            ]}


# -- one-file overhead ---------------------------------------------------------------------------
def overhead(bench: Bench, data: Data, repeat: int) -> dict[str, Any]:
    s = data.sizes
    files = data.files("one", 1, s.one_size, ext="mov")
    manifest = bench.manifest("one", "oneFile", files, project="bench_one")
    pubs: list[Proc] = []
    passes: list[Proc] = []
    clis: list[Proc] = []

    def publish() -> None:
        p = bench.publish(manifest, bench.job_id("one"))
        pubs.append(p)
        bench.remove_published(p.result())

    def baseline() -> None:
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
            "targets": [_target("overhead", "one-file publish overhead over `python -c pass` <= 0.6 s",
                                over, 0.6, "s")]}


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
    "full-copy": full_copy,
    "hardlink": hardlink,
    "resume": resume,
    "small-files": small_files,
    "overhead": overhead,
    "concurrency": concurrency,
}
