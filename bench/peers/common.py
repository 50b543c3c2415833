"""Shared helpers for the peer benchmarks: timing, temp dirs, versions, result dicts, JSON output."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from importlib import metadata

PG_DSN = os.environ.get("BENCH_PG_DSN", "postgres://postgres@127.0.0.1:5432/test")
SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}

now = time.perf_counter  # monotonic, system-wide on Linux: comparable across processes


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@contextlib.contextmanager
def tmpdir(prefix: str = "peer"):
    """A fresh directory, removed afterwards. BENCH_TMPDIR picks the filesystem (default: system temp)."""
    path = tempfile.mkdtemp(prefix=f"bench-{prefix}-", dir=os.environ.get("BENCH_TMPDIR"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fs_type(path: str) -> str | None:
    """Filesystem type holding `path` (from /proc/mounts): fsync cost depends on it."""
    path, best = os.path.realpath(path), ("", None)
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            _dev, mnt, typ, *_ = line.split()
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                best = (mnt, typ)
    return best[1]


def sqlite_durability(conn: sqlite3.Connection, **extra) -> dict:
    """The pragmas actually in force on a connection (read back, not assumed)."""
    jm = conn.execute("PRAGMA journal_mode").fetchone()[0]
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    return {"journal_mode": jm, "synchronous": SYNC_NAMES.get(sync, sync), **extra}


def pg_durability(conn) -> dict:
    names = ("fsync", "synchronous_commit", "wal_sync_method", "full_page_writes", "server_version")
    return {n: conn.execute(f"SHOW {n}").fetchone()[0] for n in names}


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def result(
    system: str,
    scenario: str,
    n: int,
    seconds: float,
    durability: dict,
    package: str | None,
    *,
    hops: bool = False,
    timed: int | None = None,
    **extra,
) -> dict:
    """`timed`: how many tasks/hops `seconds` covers, when that is not n (e.g. first-done -> last-done = n-1)."""
    timed = n if timed is None else timed
    out = {"system": system, "scenario": scenario, "n": n, "seconds": round(seconds, 4)}
    if timed != n:
        out["timed"] = timed
    if hops:
        out["ms_per_hop"] = round(seconds * 1000 / timed, 3) if timed else None
    else:
        out["per_second"] = round(timed / seconds, 1) if seconds > 0 else None
    out["durability"] = durability
    out["package"] = package
    out["version"] = sqlite3.sqlite_version if package == "sqlite3" else version(package) if package else None
    out.update(extra)
    out["env"] = {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "tmp_fs": fs_type(os.environ.get("BENCH_TMPDIR") or tempfile.gettempdir()),
    }
    return out


def emit(obj: dict) -> None:
    print(json.dumps(obj, default=str), flush=True)


def wait_until(pred, timeout: float, interval: float = 0.01, what: str = "condition"):
    """Poll `pred()` until truthy; returns its value and time.perf_counter() when first seen."""
    deadline = now() + timeout
    while True:
        v = pred()
        if v:
            return v, now()
        if now() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def spawn(
    args: list[str], cwd: str, env_extra: dict | None = None, log: str | None = None
) -> subprocess.Popen:
    """Start a child with this interpreter; its output goes to a log file inside the temp dir."""
    env = {**os.environ, **(env_extra or {})}
    out = open(log or os.path.join(cwd, "child.log"), "ab")  # noqa: SIM115 - closed with the temp dir
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(procs: list[subprocess.Popen], timeout: float = 10) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def tail(path: str, chars: int = 2000) -> str:
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        return f.read()[-chars:]
    return ""


# --- a throwaway Django project in a temp dir, for the Django-based peers ---

SETTINGS = """
SECRET_KEY = "bench-not-secret"
USE_TZ = True
DEBUG = False
INSTALLED_APPS = {apps!r}
DATABASES = {{"default": {{
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": {db!r},
    "OPTIONS": {{
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }},
}}}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {{"version": 1, "disable_existing_loggers": False, "root": {{"level": "WARNING"}}}}
"""
DURABILITY = {"journal_mode": "WAL", "synchronous": "NORMAL", "transaction_mode": "IMMEDIATE"}


def make_project(d: str, apps: list[str], extra_settings: str = "", tasks_py: str = "") -> dict:
    """Write benchsettings.py / benchtasks.py into `d`; return env vars for children (and set them here)."""
    with open(os.path.join(d, "benchsettings.py"), "w") as f:
        f.write(SETTINGS.format(apps=apps, db=os.path.join(d, "db.sqlite3")) + extra_settings)
    with open(os.path.join(d, "benchtasks.py"), "w") as f:
        f.write(tasks_py)
    env = {
        "DJANGO_SETTINGS_MODULE": "benchsettings",
        "PYTHONPATH": os.pathsep.join([d, os.getcwd(), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchsettings"
    sys.path.insert(0, d)
    return env


def setup_and_migrate() -> dict:
    """django.setup() + migrate in this process; returns the pragmas in force on the default connection."""
    import django
    from django.core.management import call_command
    from django.db import connection

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    with connection.cursor() as c:
        jm = c.execute("PRAGMA journal_mode").fetchone()[0]
        sync = c.execute("PRAGMA synchronous").fetchone()[0]
    return {**DURABILITY, "journal_mode": jm, "synchronous": SYNC_NAMES.get(sync, sync)}
