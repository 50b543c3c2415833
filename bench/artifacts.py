"""Benchmark: store, then download, a large artifact; report peak RSS against its size.

    .venv/bin/python -m bench.artifacts [--size-mb 200] [--through-step]

The measurement runs in a fresh subprocess (``--child``) so ``ru_maxrss`` starts from a clean
baseline: Django set up and the modules imported, nothing else. The body is a file-like that
generates its bytes as it is read, so the only copies in memory are the store's own buffers.
With ``--through-step`` the artifact is stored by an executor through
``StepContext.store_artifact`` and committed by the engine (a throwaway SQLite database).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

MIB = 1024 * 1024


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class GeneratedBody(io.RawIOBase):
    """``size`` bytes made up as they are read: a random block, varied per read so nothing dedups."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.block = os.urandom(MIB)
        self.count = 0
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            raise AssertionError("the store asked for the whole body at once")
        take = min(n, self.remaining, len(self.block))
        if take <= 0:
            return b""
        self.count += 1
        data = self.count.to_bytes(8, "little") + self.block[8:take] if take > 8 else self.block[:take]
        self.remaining -= len(data)
        self.digest.update(data)
        return data


def child(size: int, var_dir: str, through_step: bool) -> dict[str, Any]:
    os.environ["WFSITE_VAR_DIR"] = var_dir
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wfsite.settings")
    import django

    django.setup()
    from workflow.stores.artifacts import CHUNK, FileArtifactStore, new_key

    store = FileArtifactStore(os.path.join(var_dir, "blobs"))
    runtime = None
    if through_step:
        from datetime import timedelta

        from django.core.management import call_command

        from workflow import Config, Package, Registry, Runtime, StepContext
        from workflow.models import Artifact
        from workflow.stores.db import DjangoStore

        call_command("migrate", verbosity=0)
        pkg = Package("bench")

        @pkg.entrypoint
        def start(run: Any, params: Any) -> None:
            run.step("big", None, kind="big")

        @pkg.executor("big")
        def big(step: StepContext) -> dict:
            ref = step.store_artifact("big.bin", "application/octet-stream", body)
            return {"id": ref.id}

        runtime = Runtime(Config(poll_interval=timedelta(milliseconds=50), max_workers=1), store=DjangoStore(),
                          registry=Registry([pkg]), artifact_store=store)
    body = GeneratedBody(size)
    baseline = max_rss_mib()

    started = time.perf_counter()
    if runtime is not None:
        run_id = runtime.start_run("bench", None).id
        runtime.run_once()
        row = Artifact.objects.get(run_id=run_id)
        key, stored, digest = row.storage_key, row.size, row.sha256
    else:
        key, stored, digest = store.put(new_key()[1], "application/octet-stream", body)
    put_seconds = time.perf_counter() - started
    after_put = max_rss_mib()

    started = time.perf_counter()
    check = hashlib.sha256()
    downloaded = 0
    with store.open(key) as fh:
        for chunk in fh.chunks(CHUNK):
            check.update(chunk)
            downloaded += len(chunk)
    get_seconds = time.perf_counter() - started
    after_get = max_rss_mib()
    size_mib = size / MIB
    return {
        "benchmark": "artifact_store_then_download",
        "mode": "StepContext.store_artifact + commit" if through_step else "FileArtifactStore.put",
        "artifact_mib": round(size_mib, 1),
        "stored_bytes": stored,
        "downloaded_bytes": downloaded,
        "sha256_ok": digest == body.digest.hexdigest() == check.hexdigest(),
        "baseline_rss_mib": round(baseline, 1),
        "peak_rss_after_put_mib": round(after_put, 1),
        "peak_rss_after_download_mib": round(after_get, 1),
        "peak_over_baseline_mib": round(after_get - baseline, 1),
        "peak_over_baseline_pct_of_artifact": round(100 * (after_get - baseline) / size_mib, 2),
        "peak_pct_of_artifact": round(100 * after_get / size_mib, 1),
        "put_seconds": round(put_seconds, 2),
        "put_mib_per_s": round(size_mib / put_seconds, 1),
        "download_seconds": round(get_seconds, 2),
        "download_mib_per_s": round(size_mib / get_seconds, 1),
        "python": sys.version.split()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--through-step", action="store_true")
    parser.add_argument("--child", metavar="VAR_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = args.size_mb * MIB
    if args.child:
        print(json.dumps(child(size, args.child, args.through_step)))
        return
    var_dir = tempfile.mkdtemp(prefix="bench-artifacts-", dir=os.environ.get("BENCH_TMPDIR"))
    try:
        cmd = [sys.executable, "-m", "bench.artifacts", "--size-mb", str(args.size_mb), "--child", var_dir]
        if args.through_step:
            cmd.append("--through-step")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        print(json.dumps(json.loads(out.strip().splitlines()[-1]), indent=2))
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
