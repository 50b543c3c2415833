"""Retention: prunewf deletes old finished runs with all they own, in batches, and sweeps orphan blobs."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import models, transaction
from django.utils import timezone

from tests.conftest import drain
from workflow import Config, Package, Registry, RunState, Runtime, StepContext, require
from workflow.engine.values import ClaimRequest
from workflow.models import Artifact, Dependency, Event, Lease, Record, Run, Step
from workflow.stores.artifacts import FileArtifactStore
from workflow.stores.db import DjangoStore
from workflow.stores.retention import OWNED_TABLES, _delete_batch, parse_duration, prune_orphans, prune_runs

OLD = timedelta(days=40)
GRAPH = [
    {"id": "p", "kind": "rec_run"},
    {"id": "s", "kind": "store_blob", "deps": ["p"]},
]


@pytest.fixture
def package_kinds() -> list[Callable[[Package], None]]:
    def add_kinds(pkg: Package) -> None:
        @pkg.executor("rec_run")
        def rec_run(step: StepContext) -> None:
            step.record("by_run", step.step.run_id, {"step": step.step.step_id})
            step.artifact("note.txt", "text/plain", b"inline note")

        @pkg.executor("store_blob")
        def store_blob(step: StepContext) -> None:
            step.store_artifact("out.bin", "application/octet-stream", io.BytesIO(step.step.run_id.encode() * 100))

    return [add_kinds]


@pytest.fixture
def registry(demo_package: Package) -> Registry:
    other = Package("other")

    @other.entrypoint
    def start(run: Any, params: Any) -> None:
        first = run.step("p", None, kind="rec_run")
        run.step("s", None, kind="store_blob", depends_on=require(first))

    return Registry([demo_package, other])


def make_runs(rt: Runtime, n: int, *, age: timedelta = OLD, package: str = "t") -> list[str]:
    """Start ``n`` runs, run them to the end, and make them look finished ``age`` ago."""
    ids = [rt.start_run(package, {"steps": GRAPH}).id for _ in range(n)]
    drain(rt)
    assert set(Run.objects.filter(pk__in=ids).values_list("state", flat=True)) == {RunState.SUCCEEDED}
    Run.objects.filter(pk__in=ids).update(finished_at=timezone.now() - age)
    return ids


def owned_counts(run_ids: list[str]) -> dict[str, int]:
    return {name: model.objects.filter(**{f"{col.removesuffix('_id')}__in" if col != "id" else "pk__in": run_ids}).count()
            for name, model, col in OWNED_TABLES}


def blob_paths(store: FileArtifactStore, run_ids: list[str]) -> list[Path]:
    keys = Artifact.objects.filter(run_id__in=run_ids, storage_key__isnull=False).values_list("storage_key", flat=True)
    return [Path(store.storage.path(k)) for k in keys]


@pytest.fixture
def world(runtime: Runtime) -> dict[str, Any]:
    """Old finished runs (one canceled), recent finished runs, and active runs that look old."""
    old = make_runs(runtime, 5)
    recent = make_runs(runtime, 2, age=timedelta(days=1))
    canceled = runtime.start_run("t", {"steps": [{"id": "c", "kind": "noop"}]}).id
    runtime.cancel_run(canceled)
    Run.objects.filter(pk=canceled).update(finished_at=timezone.now() - OLD)
    # A failed run an operator retried long after: active again, must survive.
    retried = runtime.start_run("t", {"steps": [{"id": "f", "kind": "fail"}]}).id
    drain(runtime)
    Run.objects.filter(pk=retried).update(finished_at=timezone.now() - OLD)
    runtime.retry_step(retried, "f", actor="ops")
    active = runtime.start_run("t", {"steps": GRAPH}).id  # never drained: ready and pending steps
    Run.objects.filter(pk__in=[retried, active]).update(created_at=timezone.now() - OLD * 2)
    return {"old": [*old, canceled], "recent": recent, "active": [retried, active]}


# -- prune_runs -----------------------------------------------------------------------------------
def test_prune_runs__removes_old_finished_runs_with_everything_they_own(runtime: Runtime, world: dict) -> None:
    store = runtime.artifact_store
    expected = owned_counts(world["old"])
    assert expected["leases"] and expected["events"] and expected["dependencies"] and expected["records"]
    old_blobs = blob_paths(store, world["old"])
    kept_ids = world["recent"] + world["active"]
    kept = owned_counts(kept_ids)
    kept_blobs = blob_paths(store, kept_ids)
    assert len(old_blobs) == 5 and all(p.exists() for p in old_blobs)

    report = prune_runs(older_than=timedelta(days=30), artifact_store=store)

    assert report.runs == 6 and not report.is_dry_run
    assert {name: getattr(report, name) for name in expected} == expected
    assert report.blobs == 5 and report.blob_failures == 0
    assert owned_counts(world["old"]) == dict.fromkeys(expected, 0)
    assert not any(p.exists() for p in old_blobs)
    assert owned_counts(kept_ids) == kept
    assert all(p.exists() for p in kept_blobs)
    assert Run.objects.get(pk=world["active"][0]).state == RunState.RUNNING
    # The active runs still run: the retried step once more, and both steps of the never-drained run.
    assert drain(runtime) == 1 + len(GRAPH)
    assert Run.objects.get(pk=world["active"][0]).state == RunState.FAILED
    assert Run.objects.get(pk=world["active"][1]).state == RunState.SUCCEEDED


def test_prune_runs__dry_run_changes_nothing_and_reports_what_it_would_remove(runtime: Runtime, world: dict) -> None:
    before = owned_counts(world["old"] + world["recent"] + world["active"])
    dry = prune_runs(older_than=timedelta(days=30), dry_run=True, artifact_store=runtime.artifact_store)
    assert dry.is_dry_run and dry.runs == 6 and dry.blobs == 5
    assert owned_counts(world["old"] + world["recent"] + world["active"]) == before
    assert all(p.exists() for p in blob_paths(runtime.artifact_store, world["old"]))
    real = prune_runs(older_than=timedelta(days=30), artifact_store=runtime.artifact_store)
    fields = ("runs", "steps", "dependencies", "leases", "events", "records", "artifacts", "blobs")
    assert [getattr(dry, f) for f in fields] == [getattr(real, f) for f in fields]


def test_prune_runs__works_in_bounded_batches(runtime: Runtime, world: dict) -> None:
    report = prune_runs(older_than=timedelta(days=30), batch_size=4, artifact_store=runtime.artifact_store)
    assert report.runs == 6 and report.batches == 2
    assert not Run.objects.filter(pk__in=world["old"]).exists()


def test_prune_runs__filters_by_package(runtime: Runtime) -> None:
    ours = make_runs(runtime, 2)
    theirs = make_runs(runtime, 2, package="other")
    report = prune_runs(older_than=timedelta(days=30), package="other", artifact_store=runtime.artifact_store)
    assert report.runs == 2 and report.package == "other"
    assert set(Run.objects.values_list("id", flat=True)) == set(ours)
    assert not Step.objects.filter(run_id__in=theirs).exists()


def test_prune_runs__keeps_a_record_a_newer_run_overwrote(runtime: Runtime) -> None:
    old = runtime.start_run("t", {"steps": [{"id": "p", "kind": "produce"}]}).id
    drain(runtime)
    Run.objects.filter(pk=old).update(finished_at=timezone.now() - OLD)
    new = runtime.start_run("t", {"steps": [{"id": "p", "kind": "produce"}]}).id
    drain(runtime)
    assert runtime.record("things", "p").run_id == new
    report = prune_runs(older_than=timedelta(days=30), artifact_store=runtime.artifact_store)
    assert report.runs == 1 and report.records == 0
    assert runtime.record("things", "p").run_id == new


def test_prune_runs__rechecks_each_batch_inside_its_transaction(runtime: Runtime, world: dict) -> None:
    # A candidate that became active between the candidate query and its batch is skipped.
    from django.db import connection

    from workflow.stores.retention import _Tally

    tally = _Tally()
    deleted, keys = _delete_batch(connection, world["active"] + world["recent"], timezone.now() - timedelta(days=30),
                                  tally)
    assert deleted == set() and keys == [] and tally.counts == {}
    assert Run.objects.filter(pk__in=world["active"] + world["recent"]).count() == 4


def test_prune_runs__reports_blobs_it_could_not_delete_and_the_orphan_sweep_gets_them(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = runtime.artifact_store
    old = make_runs(runtime, 3)
    paths = blob_paths(store, old)
    with monkeypatch.context() as m:
        m.setattr(store, "delete", lambda key: (_ for _ in ()).throw(PermissionError("read-only bucket")))
        report = prune_runs(older_than=timedelta(days=30), artifact_store=store)
    assert report.runs == 3 and report.blobs == 0 and report.blob_failures == 3
    assert all("read-only bucket" in error for _, error in report.failed_blobs)
    assert not Run.objects.filter(pk__in=old).exists()  # the rows went; only the blobs stayed
    assert all(p.exists() for p in paths)

    orphans = prune_orphans(artifact_store=store, now=timezone.now() + timedelta(hours=2))
    assert orphans.orphans == orphans.deleted == 3
    assert not any(p.exists() for p in paths)


def test_prune_runs__refuses_to_run_inside_a_transaction(runtime: Runtime) -> None:
    with transaction.atomic(), pytest.raises(RuntimeError, match="outside"):
        prune_runs(older_than=timedelta(days=30), artifact_store=runtime.artifact_store)


def test_prune_runs__refuses_bad_arguments(transactional_db: Any) -> None:
    with pytest.raises(ValueError, match="negative"):
        prune_runs(older_than=timedelta(days=-1), artifact_store=None)
    with pytest.raises(ValueError, match="batch_size"):
        prune_runs(older_than=timedelta(days=1), batch_size=0, artifact_store=None)


def test_owned_tables__cover_every_model_that_references_runs_or_steps() -> None:
    covered = {model for _, model, _ in OWNED_TABLES}
    for target in (Run, Step):
        for rel in target._meta.related_objects:
            if isinstance(rel.field, models.ForeignKey):
                assert rel.related_model in covered, f"{rel.related_model.__name__} references {target.__name__}"
    # Children are deleted before the tables they point to.
    order = [model for _, model, _ in OWNED_TABLES]
    assert order.index(Step) > max(order.index(m) for m in (Dependency, Lease, Artifact))
    assert order[-1] is Run and Record in covered and Event in covered


# -- prune_orphans ------------------------------------------------------------------------------------
def test_prune_orphans__spares_blobs_a_live_attempt_may_still_commit(runtime: Runtime) -> None:
    store = runtime.artifact_store
    key, _, _ = store.put("ab/abandoned", "text/plain", b"from a killed worker")
    two_hours_ago = (timezone.now() - timedelta(hours=2)).timestamp()
    os.utime(store.storage.path(key), (two_hours_ago, two_hours_ago))
    # A step claimed three hours ago is still running: its blob could be this one.
    runtime.start_run("t", {"steps": [{"id": "x", "kind": "noop"}]})
    Step.objects.update(available_at=timezone.now() - timedelta(hours=4))
    claim = ClaimRequest(worker_id="slow", limit=1, lease_duration=timedelta(hours=4))
    _, claimed = runtime.store.complete_and_claim([], claim, timezone.now() - timedelta(hours=3))
    assert len(claimed.steps) == 1
    report = prune_orphans(artifact_store=store)
    assert report.orphans == 0 and report.too_recent == 1 and store.exists(key)
    Lease.objects.update(released_at=timezone.now())
    report = prune_orphans(artifact_store=store)
    assert report.orphans == report.deleted == 1 and not store.exists(key)


# -- the command -------------------------------------------------------------------------------------
@pytest.fixture
def site(settings: Any, tmp_path: Path, registry: Registry, transactional_db: Any) -> Any:
    """A runtime whose artifact store is the one settings.WORKFLOW names, as prunewf sees it."""
    from workflow import conf

    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                      "OPTIONS": {"location": str(tmp_path / "site-artifacts")}},
    }
    settings.WORKFLOW = {**settings.WORKFLOW, "ARTIFACT_STORAGE": "artifacts", "RETENTION": timedelta(days=7)}
    rt = Runtime(Config(poll_interval=timedelta(milliseconds=50)), store=DjangoStore(), registry=registry,
                 artifact_store=conf.artifact_store())
    yield rt
    rt.close()


def prunewf(*args: str) -> str:
    out = StringIO()
    call_command("prunewf", *args, stdout=out, stderr=out)
    return out.getvalue()


def test_command__prunes_and_prints_a_summary(site: Runtime) -> None:
    old = make_runs(site, 3)
    make_runs(site, 1, age=timedelta(days=1))
    blobs = blob_paths(site.artifact_store, old)
    assert all(p.exists() and "site-artifacts/artifacts/" in str(p) for p in blobs)
    out = prunewf("--older-than", "30d", "--batch-size", "2")
    assert "removed 3 finished runs" in out and "(2 batches)" in out
    assert "6 steps" in out and "3 dependencies" in out and "3 records" in out and "3 blobs" in out
    assert not any(p.exists() for p in blobs)
    assert Run.objects.count() == 1


def test_command__dry_run_changes_nothing(site: Runtime) -> None:
    make_runs(site, 2)
    out = prunewf("--older-than", "30d", "--dry-run")
    assert "would remove 2 finished runs" in out and "2 blobs" in out
    assert Run.objects.count() == 2


def test_command__filters_by_package(site: Runtime) -> None:
    make_runs(site, 1)
    make_runs(site, 2, package="other")
    out = prunewf("--older-than", "30d", "--package", "other")
    assert "removed 2 finished runs of package 'other'" in out
    assert list(Run.objects.values_list("package", flat=True)) == ["t"]


def test_command__defaults_to_the_retention_setting(site: Runtime) -> None:
    make_runs(site, 1, age=timedelta(days=10))  # older than RETENTION (7 days), younger than 30
    make_runs(site, 1, age=timedelta(days=3))
    assert "removed 1 finished runs" in prunewf()
    assert Run.objects.count() == 1


@pytest.mark.parametrize("age", ["30x", "abc", "-5d", "", "30", "d", "1.5h"])
def test_command__bad_older_than_is_a_clear_error(site: Runtime, age: str) -> None:
    with pytest.raises(CommandError, match="--older-than.*30d, 12h, 15m, 90s"):
        prunewf(f"--older-than={age}")


def test_command__bad_batch_size_is_a_clear_error(site: Runtime) -> None:
    with pytest.raises(CommandError, match="--batch-size"):
        prunewf("--batch-size", "0")


def test_command__orphans_reports_and_deletes_unreferenced_old_blobs(site: Runtime) -> None:
    store = site.artifact_store
    make_runs(site, 1, age=timedelta(days=1))
    key, _, _ = store.put("ff/fforphan", "text/plain", b"left behind")
    old = (timezone.now() - timedelta(hours=3)).timestamp()
    for root, _, files in os.walk(store.storage.location):
        for name in files:
            os.utime(os.path.join(root, name), (old, old))
    out = prunewf("--orphans", "--dry-run")
    assert f"orphan blob {key}" in out and "1 orphans, 1 would be deleted" in out and store.exists(key)
    out = prunewf("--orphans")
    assert "scanned 2 blobs, 1 referenced" in out and "1 deleted" in out
    assert not store.exists(key)
    assert Artifact.objects.filter(storage_key__isnull=False).count() == 1


@pytest.mark.parametrize(("text", "expected"), [
    ("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("15m", timedelta(minutes=15)),
    ("90s", timedelta(seconds=90)), ("1d12h", timedelta(days=1, hours=12)), ("2w", timedelta(weeks=2)),
    (" 0s ", timedelta(0)),
])
def test_parse_duration__reads_units(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_prune_runs__skips_a_run_retried_between_the_candidate_query_and_its_batch(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workflow.stores.retention as retention

    failed = runtime.start_run("t", {"steps": [{"id": "f", "kind": "fail"}]}).id
    others = make_runs(runtime, 2)
    drain(runtime)
    Run.objects.filter(pk=failed).update(finished_at=timezone.now() - OLD)
    real = retention._delete_batch

    def retry_first(connection: Any, ids: list[str], cutoff: Any, tally: Any) -> Any:
        if failed in ids and Run.objects.get(pk=failed).state == RunState.FAILED:
            runtime.retry_step(failed, "f", actor="ops")  # an operator acts at just this moment
        return real(connection, ids, cutoff, tally)

    monkeypatch.setattr(retention, "_delete_batch", retry_first)
    report = prune_runs(older_than=timedelta(days=30), artifact_store=runtime.artifact_store)
    assert report.runs == 2
    assert not Run.objects.filter(pk__in=others).exists()
    assert Run.objects.get(pk=failed).state == RunState.RUNNING
    assert Step.objects.filter(run_id=failed).count() == 1
