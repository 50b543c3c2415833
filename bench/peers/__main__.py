"""CLI: python -m bench.peers <system> <scenario> [--n N] [--procs P[,P...]] [system options].

Prints one JSON object per run on stdout. A comma-separated --procs (or --fsync) list runs each value in
its own fresh subprocess, one after the other (never concurrently).
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import traceback

from . import SYSTEMS
from .common import emit


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    ap.add_argument("system", choices=SYSTEMS)
    ap.add_argument("scenario", help="s1 (n independent steps) or s2 (chain of n hops; huey only)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument(
        "--procs",
        default="1",
        help="worker processes (raw_pg, procrastinate, django_tasks_db), "
        "worker threads (huey) or qcluster workers (django_q2); comma list = several runs",
    )
    ap.add_argument("--history", type=int, default=0, help="raw_sqlite: finished rows pre-inserted")
    ap.add_argument("--sync", default="NORMAL", help="raw_sqlite: PRAGMA synchronous (OFF/NORMAL/FULL)")
    ap.add_argument(
        "--fsync",
        default="default",
        help="huey: default|true|false (stock SqliteHuey) or normal (subclass); comma list ok",
    )
    a = ap.parse_args(argv)

    for opt in ("procs", "fsync"):
        values = getattr(a, opt).split(",")
        if len(values) > 1:  # one fresh interpreter per value, sequentially
            rc = 0
            for v in values:
                i = argv.index(f"--{opt}") if f"--{opt}" in argv else None
                child = [x for j, x in enumerate(argv) if i is None or j not in (i, i + 1)] + [f"--{opt}", v]
                rc |= subprocess.call([sys.executable, "-m", "bench.peers", *child])
            return rc

    mod = importlib.import_module(f"bench.peers.{a.system}")
    try:
        emit(mod.run(a.scenario, n=a.n, procs=int(a.procs), history=a.history, sync=a.sync, fsync=a.fsync))
    except Exception as e:  # still one JSON line, so the harness can record the failure
        emit(
            {
                "system": a.system,
                "scenario": a.scenario,
                "n": a.n,
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc()[-3000:],
            }
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
