"""`make bench` = `python -m bench`: every scenario for our engine, the peers and the raw limits, in one run.

    .venv/bin/python -m bench [--quick] [--only S1,S2,...] [--repeats R] [--no-profile] [--out PATH]

Groups for --only: S1 S2 S3 S4 S5 IDLE DASH PEERS PROFILE (PEERS = every peer; a group also runs the peers its
ratios need unless --no-peers). Each measurement runs in its own fresh interpreter, one at a time (the
machine has 2 cores): ours via `.venv/bin/python -m bench.ours`, peers via `.venv-bench/bin/python -m
bench.peers` (that venv is created and filled here when missing: peers never enter the product's venv).
Prints progress on stderr, then the table; writes bench/results/latest.json (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from . import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS_PY = sys.executable
BENCH_VENV = os.path.join(ROOT, ".venv-bench")
BENCH_PY = os.path.join(BENCH_VENV, "bin", "python")
PEER_PACKAGES = ["django>=5.2,<6", "huey", "django-q2", "django-tasks-db", "django-tasks", "procrastinate",
                 "psycopg[binary,pool]"]
PEER_IMPORTS = "import django, huey, django_q, django_tasks, django_tasks_db, procrastinate, psycopg"
GROUPS = ("S1", "S2", "S3", "S4", "S5", "TASKS", "IDLE", "DASH", "PEERS", "PROFILE")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ensure_bench_venv() -> str | None:
    """Create .venv-bench with the peers if it is missing or incomplete; returns an error text or None."""
    ok = os.path.exists(BENCH_PY) and subprocess.call([BENCH_PY, "-c", PEER_IMPORTS], stderr=subprocess.DEVNULL) == 0
    if ok:
        return None
    log("installing the peers into .venv-bench (never into the product's venv)")
    try:
        if not os.path.exists(BENCH_PY):
            subprocess.check_call(["python3", "-m", "venv", BENCH_VENV])
        subprocess.check_call([BENCH_PY, "-m", "pip", "install", "-q", *PEER_PACKAGES])
        subprocess.check_call([BENCH_PY, "-c", PEER_IMPORTS])
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"could not set up .venv-bench: {exc}"
    return None


def run_json(cmd: list[str], timeout: float) -> dict:
    """Run one measurement; its last stdout line is a JSON object (or we make an error object)."""
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout}s", "cmd": " ".join(cmd)}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    try:
        out = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        out = {"error": f"rc={p.returncode}, no JSON; stderr: {p.stderr[-1500:]}"}
    out["wall_seconds_total"] = round(time.perf_counter() - t, 2)
    if p.returncode and "error" not in out:
        out["error"] = f"rc={p.returncode}: {p.stderr[-800:]}"
    return out


class Bench:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.results: list[dict] = []  # every raw measurement, tagged with `key`
        self.tmp = tempfile.mkdtemp(prefix="bench-main-")
        self.template = os.path.join(self.tmp, "template.sqlite3")
        self.peers_error: str | None = None

    def ours(self, key: str, scenario: str, *args: str, repeats: int | None = None, timeout: float = 900,
             prefix: tuple[str, ...] = ()) -> None:
        """``prefix``: a command the scenario runs under (``taskset``); its worker processes inherit it."""
        reps = self.a.repeats if repeats is None else repeats
        for i in range(reps):
            cmd = [*prefix, OURS_PY, "-m", "bench.ours", scenario, "--template", self.template, *args]
            r = run_json(cmd, timeout)
            r.update(key=key, system="ours", repeat=i + 1)
            self.results.append(r)
            log(f"{key} #{i + 1}: {report.brief(r)}")

    def peer(self, key: str, system: str, scenario: str, *args: str, repeats: int | None = None,
             timeout: float = 900) -> None:
        if self.peers_error:
            self.results.append({"key": key, "system": system, "error": self.peers_error})
            return
        reps = self.a.repeats if repeats is None else repeats
        for i in range(reps):
            r = run_json([BENCH_PY, "-m", "bench.peers", system, scenario, *args], timeout)
            r.update(key=key, system=system, repeat=i + 1)
            self.results.append(r)
            log(f"{key} #{i + 1}: {report.brief(r)}")

    def run(self) -> dict:
        a, t0 = self.a, time.perf_counter()
        only = set(a.only.upper().split(",")) if a.only else set(GROUPS)
        peers = not a.no_peers
        n = 1000 if a.quick else 10000
        n_slow = 1000 if a.quick else 5000  # peers at a few hundred/s: same per-second figure, shorter run
        hist = 100_000 if a.quick else 1_000_000
        chain = 300
        log(f"temp dir {self.tmp}; n={n}, repeats={a.repeats}, groups={','.join(sorted(only))}")
        if peers and (only & {"S1", "S2", "S4", "S5", "TASKS", "PEERS"}):
            self.peers_error = ensure_bench_venv()
        r = run_json([OURS_PY, "-m", "bench.ours", "template", "--out", self.template], 300)
        if "error" in r:
            raise SystemExit(f"cannot build the template database: {r['error']}")

        if "S1" in only:
            self.ours("S1 ours 1p x 1t", "s1", "--n", str(n), "--procs", "1", "--threads", "1")
            self.ours("S1 ours 1p x 4t", "s1", "--n", str(n), "--procs", "1", "--threads", "4")
            self.ours("S1 ours 2p x 1t", "s1", "--n", str(n), "--procs", "2", "--threads", "1")
        if ("S1" in only and peers) or "PEERS" in only:
            self.peer("S1 huey 1t sync=FULL (default)", "huey", "s1", "--n", str(n), "--procs", "1", "--fsync", "default")
            self.peer("S1 huey 1t sync=NORMAL", "huey", "s1", "--n", str(n), "--procs", "1", "--fsync", "normal")
            self.peer("S1 django_q2 1 worker", "django_q2", "s1", "--n", str(n_slow), "--procs", "1")
            self.peer("S1 django_tasks_db 1 worker", "django_tasks_db", "s1", "--n", str(n_slow), "--procs", "1")
            self.peer("S1 raw_sqlite limit", "raw_sqlite", "s1", "--n", str(n))
        if "S2" in only:
            self.ours("S2 ours chain", "s2", "--n", str(chain), "--threads", "1")
            self.ours("S2 ours hop, store and SQL floor", "hop", "--n", str(chain))
            if shutil.which("taskset"):  # the worker's loop and pool thread on one CPU: no wake-up crosses CPUs
                self.ours("S2 ours chain, one CPU", "s2", "--n", str(chain), "--threads", "1",
                          prefix=("taskset", "-c", "1"))
        if ("S2" in only and peers) or "PEERS" in only:
            self.peer("S2 huey chain sync=NORMAL", "huey", "s2", "--n", str(chain), "--fsync", "normal")
            self.peer("S2 huey chain sync=FULL (default)", "huey", "s2", "--n", str(chain), "--fsync", "default")
        if "S3" in only:
            self.ours("S3 ours fan-out", "s3", "--n", str(n), "--threads", "4")
            if "S1" not in only:
                self.ours("S1 ours 1p x 4t", "s1", "--n", str(n), "--procs", "1", "--threads", "4")
        if "S4" in only:
            for h in (0, hist):
                self.ours(f"S4 ours history={h}", "s4", "--history", str(h), "--n", str(n), "--threads", "1",
                          "--repeats", str(a.repeats), "--claims", "500" if a.quick else "2000", repeats=1)
        if ("S4" in only and peers) or "PEERS" in only:
            self.peer(f"S4 raw_sqlite limit history={hist}", "raw_sqlite", "s1", "--n", str(n), "--history", str(hist))
            if "S1" not in only and "PEERS" not in only:
                self.peer("S1 raw_sqlite limit", "raw_sqlite", "s1", "--n", str(n))
        if "S5" in only:
            for p in (1, 2, 4):
                self.ours(f"S5 ours pg {p}p x 1t", "s1", "--db", "pg", "--n", str(n), "--procs", str(p))
            self.ours("S5 ours pg chain", "s2", "--db", "pg", "--n", str(chain))
            self.ours("S5 ours pg wake NOTIFY", "wake", "--db", "pg", "--n", "10" if a.quick else "20",
                      "--poll", "1", repeats=1)
            self.ours("S5 ours pg wake poll 1s", "wake", "--db", "pg", "--n", "10" if a.quick else "20",
                      "--poll", "1", "--no-listen", repeats=1)
            self.ours("S5 ours pg wake poll 0.05s", "wake", "--db", "pg", "--n", "10" if a.quick else "20",
                      "--poll", "0.05", "--no-listen", repeats=1)
        if ("S5" in only and peers) or "PEERS" in only:
            for p in (1, 2, 4):
                self.peer(f"S5 raw_pg limit {p}p", "raw_pg", "s1", "--n", str(n), "--procs", str(p))
            for p in (1, 2, 4):
                self.peer(f"S5 procrastinate {p}p", "procrastinate", "s1", "--n", str(n_slow), "--procs", str(p))
        if "TASKS" in only:
            for i in range(a.repeats):
                r = run_json([OURS_PY, "-m", "bench.tasks", "--n", str(n), "--template", self.template], 1800)
                r.update(key="TASKS ours backend", system="ours", repeat=i + 1)
                self.results.append(r)
                log(f"TASKS ours backend #{i + 1}: {report.brief(r)}")
            if peers:
                self.peer("TASKS django_tasks_db 1 worker", "django_tasks_db", "s1", "--n", str(n), "--procs", "1",
                          timeout=3600)
        if "IDLE" in only:  # idle at cap: transactions per second per worker while nothing can start
            self.ours("IDLE ours at cap 2p x 4t", "idle", "--n", "6", "--procs", "2", "--threads", "4", "--poll", "1",
                      repeats=1)
        if "DASH" in only:
            self.ours("DASH ours", "dash", "--runs", str(hist), "--per-run", "0", "--n", str(n), "--repeats", "5",
                      repeats=1, timeout=1200)
        if "PROFILE" in only and not a.no_profile:
            self.ours("PROFILE s1 1p x 1t", "profile", "--shape", "s1", "--n", str(n), "--threads", "1",
                      "--out", os.path.join(self.tmp, "profile-s1.txt"), repeats=1)
            self.ours("PROFILE s2 chain", "profile", "--shape", "s2", "--n", str(max(chain, n // 5)), "--threads", "1",
                      "--out", os.path.join(self.tmp, "profile-s2.txt"), repeats=1)
            self.ours("PROFILE s3 fan-out", "profile", "--shape", "s3", "--n", str(n), "--threads", "4",
                      "--out", os.path.join(self.tmp, "profile-s3.txt"), repeats=1)
            self.ours("PROFILE s5 pg chain", "profile", "--shape", "s2", "--db", "pg", "--n", str(chain),
                      "--threads", "1", "--out", os.path.join(self.tmp, "profile-s5-chain.txt"), repeats=1)
        return report.build(self.results, machine=report.machine(BENCH_PY), args=vars(a),
                            seconds=time.perf_counter() - t0, peers_error=self.peers_error)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: n=1000, 1 repeat, 100k history")
    ap.add_argument("--only", help=f"comma list of {', '.join(GROUPS)}")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per scenario (default 3, --quick 1)")
    ap.add_argument("--no-peers", action="store_true", help="skip the peers (ratios then say n/a)")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--keep-profiles", action="store_true",
                    help="copy py-spy's raw stacks to bench/results/profiles/ (flamegraph/speedscope input)")
    ap.add_argument("--merge", action="store_true",
                    help="replace only the measurements re-run here in the existing --out file (e.g. with --only)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "latest.json"))
    a = ap.parse_args(argv)
    if a.repeats is None:
        a.repeats = 1 if a.quick else 3
    bench = Bench(a)
    try:
        data = bench.run()
        prof_dir = os.path.join(os.path.dirname(a.out), "profiles")
        for name in os.listdir(bench.tmp):
            if a.keep_profiles and name.startswith("profile-"):  # py-spy raw (collapsed) stacks: speedscope/flamegraph input
                os.makedirs(prof_dir, exist_ok=True)
                shutil.copyfile(os.path.join(bench.tmp, name), os.path.join(prof_dir, name))
    finally:
        shutil.rmtree(bench.tmp, ignore_errors=True)
    if a.merge and os.path.exists(a.out):
        with open(a.out) as f:
            old = json.load(f)
        fresh = {r["key"] for r in data["raw"]}
        raw = [r for r in old["raw"] if r["key"] not in fresh] + data["raw"]
        data = report.build(raw, machine=data["machine"], args={**old["args"], "merged": vars(a)},
                            seconds=old["seconds"] + data["seconds"], peers_error=data["peers_error"])
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(data, f, indent=1, default=str)
        f.write("\n")
    print(report.table(data))
    print(f"\nwrote {os.path.relpath(a.out, ROOT)} ({data['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
