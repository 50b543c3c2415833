"""Medians, ratios, targets (issue 7 section 3), the machine description, the table and the JSON."""

from __future__ import annotations

import contextlib
import os
import platform
import sqlite3
import statistics
import subprocess
import time
from typing import Any

PG_DSN = os.environ.get("BENCH_PG_DSN", "postgres://postgres@127.0.0.1:5432/test")


# ------------------------------------------------------------------------------------------- machine
def machine(bench_py: str | None = None) -> dict:
    out: dict[str, Any] = {"nproc": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                           "sqlite": sqlite3.sqlite_version, "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                out["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                out["ram_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    with contextlib.suppress(OSError), open("/proc/loadavg") as f:
        out["loadavg_at_end"] = f.read().split()[:3]
    with contextlib.suppress(Exception):
        import django

        out["django"] = django.get_version()
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=3) as c:
            out["postgres"] = c.execute("SHOW server_version").fetchone()[0]
            out["postgres_durability"] = {n: c.execute(f"SHOW {n}").fetchone()[0]
                                          for n in ("fsync", "synchronous_commit", "wal_sync_method", "full_page_writes")}
    with contextlib.suppress(Exception):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "workflow"], cwd=root, capture_output=True,
                               text=True).stdout
        out["git"] = {"head": head.strip(), "uncommitted_engine_files": len(dirty.splitlines())}
    if bench_py and os.path.exists(bench_py):
        code = ("import importlib.metadata as m, json; print(json.dumps({d: m.version(d) for d in "
                "['django', 'huey', 'django-q2', 'django-tasks', 'django-tasks-db', 'procrastinate', 'psycopg']}))")
        with contextlib.suppress(Exception):
            import json

            out["peer_venv_versions"] = json.loads(subprocess.run([bench_py, "-c", code], capture_output=True,
                                                                  text=True, timeout=60).stdout)
    return out


# ------------------------------------------------------------------------------------------- helpers
def _med(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def brief(r: dict) -> str:
    if "error" in r:
        return f"ERROR {str(r['error'])[:300]}"
    bits = []
    for k in ("per_second", "seconds", "ms_per_hop", "ms_per_hop_p50", "ms_per_hop_p99", "commit_seconds",
              "peak_rss_mb_max", "wake_ms_p50", "transactions_per_s_per_worker", "cpu_per_worker",
              "store_us_p50", "floor_us_p50", "database_locked"):
        if r.get(k) is not None:
            bits.append(f"{k}={r[k]}")
    if r.get("scenario") == "s4":
        bits.append("reps=" + "; ".join(f"{x.get('per_second')}/s claim p50={x.get('claim_ms_p50')}ms"
                                        for x in r.get("repeats", [])))
    if r.get("scenario") == "dash":
        bits.append(", ".join(f"{k}={v.get('ms_p50', v.get('missing') or v.get('error'))}"
                              for k, v in r.get("pages", {}).items()))
    if r.get("scenario") == "profile":
        bits.append(f"samples={r.get('samples')}")
    return " ".join(bits) or "ok"


class Data:
    def __init__(self, results: list[dict]) -> None:
        self.by_key: dict[str, list[dict]] = {}
        for r in results:
            self.by_key.setdefault(r["key"], []).append(r)

    def ok(self, key: str) -> list[dict]:
        return [r for r in self.by_key.get(key, []) if "error" not in r]

    def med(self, key: str, field: str) -> float | None:
        return _med([r.get(field) for r in self.ok(key)])

    def errors(self, key: str) -> list[str]:
        return [str(r["error"])[:200] for r in self.by_key.get(key, []) if "error" in r]

    def s4(self, key: str, field: str) -> float | None:
        reps = [x for r in self.ok(key) for x in r.get("repeats", [])]
        return _med([x.get(field) for x in reps])


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


# ---------------------------------------------------------------------------------------------- build
def build(results: list[dict], *, machine: dict, args: dict, seconds: float, peers_error: str | None) -> dict:
    d = Data(results)
    rows: list[dict] = []

    def row(scenario: str, system: str, median: Any, unit: str, ratio_v: float | None = None, ratio_of: str = "",
            target: str = "", met: bool | None = None, key: str | None = None, note: str = "") -> None:
        errs = d.errors(key) if key else []
        rows.append({"scenario": scenario, "system": system, "median": median, "unit": unit,
                     "ratio": None if ratio_v is None else round(ratio_v, 3), "ratio_of": ratio_of, "target": target,
                     "met": met, "note": note or ("; ".join(errs)[:200] if errs and median is None else "")})

    def ge(v: float | None, t: float) -> bool | None:
        return None if v is None else v >= t

    def le(v: float | None, t: float) -> bool | None:
        return None if v is None else v <= t

    # S1 ------------------------------------------------------------------------------------------
    o11 = d.med("S1 ours 1p x 1t", "per_second")
    o14 = d.med("S1 ours 1p x 4t", "per_second")
    o21 = d.med("S1 ours 2p x 1t", "per_second")
    row("S1 no-op throughput", "ours 1 proc x 1 thread", o11, "steps/s", key="S1 ours 1p x 1t")
    row("S1 no-op throughput", "ours 1 proc x 4 threads", o14, "steps/s", ratio(o14, o11), "ours 1p x 4t / 1p x 1t",
        key="S1 ours 1p x 4t")
    r21 = ratio(o21, o11)
    row("S1 no-op throughput", "ours 2 procs x 1 thread", o21, "steps/s", r21, "ours 2p / 1p", ">= 1.0x", ge(r21, 1.0),
        key="S1 ours 2p x 1t")
    locked = sum(int(r.get("database_locked") or 0) for k in d.by_key if k.startswith(("S1 ours", "S3 ours", "S4 ours"))
                 for r in d.ok(k)) + sum(int(x.get("database_locked") or 0) for k in d.by_key if k.startswith("S4 ours")
                                         for r in d.ok(k) for x in r.get("repeats", []))
    have_s1 = any(d.ok(k) for k in d.by_key if k.startswith("S1 ours"))
    row("S1 'database is locked' in worker logs", "ours (all SQLite runs)", locked if have_s1 else None, "count",
        target="= 0", met=(locked == 0) if have_s1 else None)
    for key, label, target, t in (
        ("S1 huey 1t sync=NORMAL", "huey SqliteHuey 1 thread, synchronous=NORMAL (same as ours)", ">= 1.0x", 1.0),
        ("S1 huey 1t sync=FULL (default)", "huey SqliteHuey 1 thread, default = synchronous=FULL (fsync/commit)", "", None),
        ("S1 django_q2 1 worker", "django-q2 ORM broker, 1 worker (WAL, NORMAL)", ">= 5x", 5.0),
        ("S1 django_tasks_db 1 worker", "django-tasks-db db_worker, 1 process (WAL, NORMAL)", ">= 5x", 5.0),
        ("S1 raw_sqlite limit", "raw sqlite3 claim+complete loop (limit; WAL, NORMAL)", ">= 0.5x", 0.5),  # issue 17
    ):
        v = d.med(key, "per_second")
        rv = ratio(o11, v)
        row("S1 no-op throughput", label, v, "steps/s", rv, "ours 1p x 1t / peer", target or "(info: unequal durability)",
            ge(rv, t) if t else None, key=key)

    # S2 ------------------------------------------------------------------------------------------
    p50 = d.med("S2 ours chain", "ms_per_hop_p50")
    p99 = d.med("S2 ours chain", "ms_per_hop_p99")
    row("S2 chain of 300, warm worker", "ours p50 per hop", p50, "ms", target="<= 1 ms", met=le(p50, 1.0),
        key="S2 ours chain")
    row("S2 chain of 300, warm worker", "ours p99 per hop", p99, "ms", target="<= 5 ms", met=le(p99, 5.0))
    pinned = d.med("S2 ours chain, one CPU", "ms_per_hop_p50")
    row("S2 chain of 300, warm worker", "ours p50 per hop, worker on one CPU (taskset -c 1)", pinned, "ms",
        ratio(pinned, d.med("S2 huey chain sync=NORMAL", "ms_per_hop")), "ours on one CPU / huey NORMAL",
        key="S2 ours chain, one CPU",
        note=f"info: {ratio(pinned, p50) or 0:.2f}x ours on any CPU; a chain's hop stays on the executor thread"
             " that ran the parent, so pinning no longer spares a hand-off")
    # The hop taken apart (issue 17): SQLite's own work, the store's Python around it, the worker's part.
    huey = d.med("S2 huey chain sync=NORMAL", "ms_per_hop")
    store = d.med("S2 ours hop, store and SQL floor", "store_us_p50")
    floor = d.med("S2 ours hop, store and SQL floor", "floor_us_p50")
    store_ms, floor_ms = (None if v is None else v / 1000 for v in (store, floor))
    row("S2 chain of 300, warm worker", "ours: the store's hop alone (in-process, no worker loop)", store_ms, "ms",
        ratio(store_ms, floor_ms), "store hop / its SQL floor", key="S2 ours hop, store and SQL floor",
        note="info: the worker's part (the executor and its wrapper, on the thread that commits) is the rest of the p50"
             + (f", {p50 - store_ms:.3f} ms" if p50 is not None and store_ms is not None else ""))
    row("S2 chain of 300, warm worker", "the same hop's SQL through bare sqlite3 (floor)", floor_ms, "ms",
        ratio(floor_ms, huey), "SQL floor / huey mean",
        note="the store's own statements and parameters in one BEGIN IMMEDIATE ... COMMIT, site pragmas")
    rel = d.med("S2 ours chain", "release_to_claim_ms_p50")
    row("S2 chain of 300, warm worker", "ours parent release -> child claim p50", rel, "ms",
        note="claimed in the parent's commit transaction: woken by the commit, never by a poll")
    # issue 17: our hop within 2x huey's at the same durability (FULL is shown for information)
    for key, label, most in (("S2 huey chain sync=NORMAL", "huey chain, synchronous=NORMAL", 2.0),
                             ("S2 huey chain sync=FULL (default)", "huey chain, default synchronous=FULL", None)):
        v = d.med(key, "ms_per_hop")
        row("S2 chain of 300, warm worker", label, v, "ms/hop", ratio(p50, v), "ours p50 / huey mean (lower is better)",
            f"<= {most:g}x" if most else "", le(ratio(p50, v), most) if most else None, key=key)

    # S3 ------------------------------------------------------------------------------------------
    commit = d.med("S3 ours fan-out", "commit_seconds")
    total = d.med("S3 ours fan-out", "seconds")
    s1_time = d.med("S1 ours 1p x 4t", "seconds")
    rss = d.med("S3 ours fan-out", "peak_rss_mb_max")
    row("S3 fan-out 10k + join (1p x 4t)", "ours: commit of the 10,000 children", commit, "s", target="<= 1 s",
        met=le(commit, 1.0), key="S3 ours fan-out")
    row("S3 fan-out 10k + join (1p x 4t)", "ours: emitting step's executor (10,000 emit calls)",
        d.med("S3 ours fan-out", "emit_seconds"), "s", note="info: not in the target, but inside the total")
    rt = ratio(total, s1_time)
    row("S3 fan-out 10k + join (1p x 4t)", "ours: total (run start -> join committed)", total, "s", rt,
        "S3 total / S1 1p x 4t time", "<= 1.5x", le(rt, 1.5))
    row("S3 fan-out 10k + join (1p x 4t)", "ours: worker peak RSS (VmHWM)", rss, "MB", target="< 300 MB",
        met=None if rss is None else rss < 300)

    # S4 ------------------------------------------------------------------------------------------
    h_keys = sorted((k for k in d.by_key if k.startswith("S4 ours history=")), key=lambda k: int(k.split("=")[1]))
    if len(h_keys) == 2:
        k0, k1 = h_keys
        hist = k1.split("=")[1]
        c0, c1 = d.s4(k0, "claim_ms_p50"), d.s4(k1, "claim_ms_p50")
        q0, q1 = d.s4(k0, "claim_ms_p99"), d.s4(k1, "claim_ms_p99")
        t0, t1 = d.s4(k0, "per_second"), d.s4(k1, "per_second")
        row("S4 history", "ours claim p50, empty", c0, "ms", key=k0)
        row("S4 history", f"ours claim p50, {hist} finished steps", c1, "ms", ratio(c1, c0), "history / empty",
            "<= 1.2x", le(ratio(c1, c0), 1.2), key=k1)
        row("S4 history", "ours claim p99, empty", q0, "ms")
        row("S4 history", f"ours claim p99, {hist} finished steps", q1, "ms", ratio(q1, q0), "history / empty")
        row("S4 history", "ours S1 1p x 1t, empty", t0, "steps/s")
        row("S4 history", f"ours S1 1p x 1t, {hist} finished steps", t1, "steps/s", ratio(t1, t0), "history / empty",
            ">= 0.9x", ge(ratio(t1, t0), 0.9))
        plans = [p for r in d.ok(k1) for x in r.get("repeats", []) for p in x.get("claim_plan", [])]
        step_scans = [p for p in plans if "workflow_step" in p]  # the run-state lookup reads workflow_run by id
        uses = bool(step_scans) and all("step_ready_idx" in p for p in step_scans)
        row("S4 history", "claim plan after ANALYZE (history + all-ready run)", "; ".join(sorted(set(plans)))[:90] or None,
            "plan", target="uses step_ready_idx", met=uses if plans else None,
            note="the engine's test suite must assert this too (tests are not the bench's)")
        raw0 = d.med("S1 raw_sqlite limit", "per_second")
        raw1 = d.med(f"S4 raw_sqlite limit history={hist}", "per_second")
        row("S4 history", f"raw sqlite3 limit, {hist} finished rows", raw1, "steps/s", ratio(t1, raw1),
            "ours / limit (both with history)", key=f"S4 raw_sqlite limit history={hist}")
        row("S4 history", "raw sqlite3 limit: history / empty", None if not raw0 or raw1 is None else round(raw1 / raw0, 3),
            "x")

    # IDLE -----------------------------------------------------------------------------------------
    idle_tx = d.med("IDLE ours at cap 2p x 4t", "transactions_per_s_per_worker")
    row("IDLE at cap (cap 2 full of 7 s steps, more waiting; poll 1 s)", "ours transactions/s per worker", idle_tx,
        "tx/s", target="<= 5 tx/s", met=le(idle_tx, 5.0), key="IDLE ours at cap 2p x 4t")
    idle_cpu = d.med("IDLE ours at cap 2p x 4t", "cpu_per_worker")
    row("IDLE at cap (cap 2 full of 7 s steps, more waiting; poll 1 s)", "ours CPU per worker", idle_cpu, "cores")

    # S5 ------------------------------------------------------------------------------------------
    pg = {p: d.med(f"S5 ours pg {p}p x 1t", "per_second") for p in (1, 2, 4)}
    raw = {p: d.med(f"S5 raw_pg limit {p}p", "per_second") for p in (1, 2, 4)}
    pro = {p: d.med(f"S5 procrastinate {p}p", "per_second") for p in (1, 2, 4)}
    scaling = {2: 1.7, 4: 2.0}  # 2 processes: issue 17; 4: issue 7
    for p in (1, 2, 4):
        row("S5 PostgreSQL no-op throughput", f"ours {p} proc(s) x 1 thread", pg[p], "steps/s",
            ratio(pg[p], pg[1]) if p > 1 else None, f"ours {p}p / 1p" if p > 1 else "",
            f">= {scaling[p]:g}x" if p > 1 else "", ge(ratio(pg[p], pg[1]), scaling[p]) if p > 1 else None,
            key=f"S5 ours pg {p}p x 1t")
    for p in (1, 2, 4):
        row("S5 PostgreSQL no-op throughput", f"raw SKIP LOCKED loop {p} proc(s) (limit)", raw[p], "steps/s",
            ratio(pg[p], raw[p]), f"ours {p}p / limit {p}p", ">= 1.5x" if p == 1 else "",  # issue 17
            ge(ratio(pg[p], raw[p]), 1.5) if p == 1 else None, key=f"S5 raw_pg limit {p}p")
    for p in (1, 2, 4):
        row("S5 PostgreSQL no-op throughput", f"procrastinate {p} worker proc(s), concurrency 1", pro[p], "jobs/s",
            ratio(pg[p], pro[p]), f"ours {p}p / procrastinate {p}p", ">= 2x", ge(ratio(pg[p], pro[p]), 2.0),
            key=f"S5 procrastinate {p}p")
    pg_hop = d.med("S5 ours pg chain", "ms_per_hop_p50")
    row("S5 PostgreSQL chain of 300", "ours p50 per hop", pg_hop, "ms", target="<= 3 ms", met=le(pg_hop, 3.0),
        key="S5 ours pg chain")  # issue 17
    row("S5 PostgreSQL chain of 300", "ours p99 per hop", d.med("S5 ours pg chain", "ms_per_hop_p99"), "ms")
    wn = d.med("S5 ours pg wake NOTIFY", "wake_ms_p50")
    for key, label in (("S5 ours pg wake NOTIFY", "LISTEN/NOTIFY (poll 1 s as backstop)"),
                       ("S5 ours pg wake poll 1s", "polling only, poll interval 1 s (default)"),
                       ("S5 ours pg wake poll 0.05s", "polling only, poll interval 0.05 s")):
        v = d.med(key, "wake_ms_p50")
        row("S5 PostgreSQL wake-up of an idle worker (p50)", label, v, "ms",
            ratio(v, wn) if "poll" in key else None, "polling / NOTIFY (x slower)" if "poll" in key else "", key=key)

    # django.tasks backend --------------------------------------------------------------------------
    ours_t = d.med("TASKS ours backend", "per_second")
    peer_t = d.med("TASKS django_tasks_db 1 worker", "per_second")
    row("TASKS 10k no-op django.tasks (1 worker proc x 1 thread)", "ours: WorkflowBackend + runworkers", ours_t,
        "tasks/s", ratio(ours_t, peer_t), "ours / django-tasks-db", ">= 10x", ge(ratio(ours_t, peer_t), 10.0),
        key="TASKS ours backend")
    row("TASKS 10k no-op django.tasks (1 worker proc x 1 thread)", "django-tasks-db: DatabaseBackend + db_worker",
        peer_t, "tasks/s", key="TASKS django_tasks_db 1 worker")
    e50 = d.med("TASKS ours backend", "enqueue_ms_p50")
    peer_e = d.med("TASKS django_tasks_db 1 worker", "enqueue_seconds")
    n_t = d.med("TASKS django_tasks_db 1 worker", "n")
    peer_e50 = None if peer_e is None or not n_t else round(peer_e * 1000 / n_t, 3)
    row("TASKS one enqueue() in a request's transaction", "ours p50", e50, "ms", ratio(e50, peer_e50),
        "ours / django-tasks-db mean")
    row("TASKS one enqueue() in a request's transaction", "ours p99", d.med("TASKS ours backend", "enqueue_ms_p99"), "ms")

    # Dashboard -----------------------------------------------------------------------------------
    for r in d.ok("DASH ours"):
        for name, page in r.get("pages", {}).items():
            note = page.get("missing") or page.get("error") or (
                f"HTTP {page.get('status')}, {page.get('queries')} queries" + (f", {page['hops']} 'older' hops"
                                                                                 if page.get("hops") else ""))
            row(f"Dashboard ({r.get('runs_seeded'):,} runs + a {r.get('run_steps'):,}-step run)", f"ours {name}",
                page.get("ms_p50"), "ms server time", note=note)
    if d.errors("DASH ours"):
        row("Dashboard", "ours", None, "ms", key="DASH ours")

    medians = {}
    for key in d.by_key:
        ok = d.ok(key)
        if not ok:
            continue
        fields = {f for r in ok for f, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        medians[key] = {f: _med([r.get(f) for r in ok]) for f in sorted(fields) if f != "repeat"}
    systems = {}
    for key, rs in d.by_key.items():
        ok = [r for r in rs if "error" not in r]
        if ok:
            r = ok[0]
            systems[key] = {"system": r.get("system"), "package": r.get("package"), "version": r.get("version"),
                            "durability": r.get("durability"), "versions": r.get("versions"), "env": r.get("env")}
    profiles = {r["key"]: {k: r.get(k) for k in ("shape", "n", "threads", "seconds", "per_second", "samples",
                                                   "threads_pct", "engine_inclusive_pct", "self_pct", "inclusive_pct")}
                for r in results if r.get("scenario") == "profile" and "error" not in r}
    met = [r for r in rows if r["target"] and not r["target"].startswith("(info")]
    return {"command": "python -m bench " + " ".join(
                f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in args.items()
                if v not in (None, False) and k not in ("out", "repeats")),
            "args": args, "seconds": round(seconds, 1), "machine": machine, "peers_error": peers_error,
            "targets": {"met": sum(1 for r in met if r["met"] is True), "missed": sum(1 for r in met if r["met"] is False),
                        "not_measured": sum(1 for r in met if r["met"] is None)},
            "table": rows, "medians": medians, "systems": systems, "profiles": profiles, "raw": results}


# ---------------------------------------------------------------------------------------------- table
def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}" if abs(v) >= 0.01 else f"{v:.2g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(data: dict, markdown: bool = False) -> str:
    head = ["scenario", "system", "median", "unit", "ratio", "ratio of", "target", "met?", "note"]
    lines = []
    for r in data["table"]:
        met = {True: "yes", False: "NO", None: "" if not r["target"] or r["target"].startswith("(info") else "n/a"}[r["met"]]
        ratio_s = "" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        lines.append([r["scenario"], r["system"], _fmt(r["median"]), r["unit"], ratio_s, r["ratio_of"], r["target"], met,
                      r.get("note") or ""])
    m = data["machine"]
    foot = (f"machine: {m.get('nproc')} cores, {m.get('cpu_model')}, {m.get('ram_gb')} GB RAM; Python {m.get('python')}, "
            f"Django {m.get('django')}, SQLite {m.get('sqlite')}, PostgreSQL {m.get('postgres')}; "
            f"targets met {data['targets']['met']}, missed {data['targets']['missed']}, "
            f"not measured {data['targets']['not_measured']}; {data['seconds']:.0f} s")
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(x.replace("|", "/") for x in ln) + " |" for ln in lines]
        return "\n".join(out) + "\n\n" + foot
    widths = [min(max(len(h), *(len(ln[i]) for ln in lines)) if lines else len(h), 64) for i, h in enumerate(head)]
    widths[2] = min(widths[2], 16)
    widths[-1] = len(head[-1])  # the note is last and not padded

    def cell(c: str, w: int) -> str:
        return (c if len(c) <= w else c[: w - 1] + "~").ljust(w)

    out = ["  ".join(cell(h, w) for h, w in zip(head, widths, strict=False)), "  ".join("-" * w for w in widths)]
    for ln in lines:
        out.append(("  ".join(cell(c, w) for c, w in zip(ln[:-1], widths[:-1], strict=False)) + "  " + ln[-1]).rstrip())
    return "\n".join(out) + "\n" + foot + "\n" + profiles_text(data)


def profiles_text(data: dict, k: int = 8) -> str:
    out = []
    for key, p in data.get("profiles", {}).items():
        out.append(f"\n{key}: {p.get('per_second')} steps/s, {p.get('samples')} samples in the worker's threads "
                   f"{[tuple(x) for x in p.get('threads_pct') or []]}")
        out.append("  engine (inclusive %): " + "; ".join(f"{n.split(' (')[0]} {v}" for n, v in
                                                        (p.get("engine_inclusive_pct") or [])[:k + 4]))
        out.append("  self %: " + "; ".join(f"{n} {v}" for n, v in (p.get("self_pct") or [])[:k]))
    return "\n".join(out)


if __name__ == "__main__":  # re-print the table of a saved run: python -m bench.report [path] [--markdown]
    import json
    import sys

    args = [x for x in sys.argv[1:] if not x.startswith("--")]
    path = args[0] if args else os.path.join(os.path.dirname(__file__), "results", "latest.json")
    with open(path) as f:
        print(table(json.load(f), markdown="--markdown" in sys.argv))
