"""``manage.py prunewf --older-than 30d [--dry-run] [--package P] [--batch-size N] [--orphans]``.

Deletes finished runs older than the cutoff with everything they own (see ``workflow.stores.retention``);
``--orphans`` also sweeps artifact blobs that no artifact row references.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from workflow import conf
from workflow.engine.errors import WorkflowError
from workflow.stores.retention import (
    DEFAULT_BATCH_SIZE,
    ORPHAN_MIN_AGE,
    parse_duration,
    prune_orphans,
    prune_runs,
)


def _duration(option: str, text: str | None, default: timedelta) -> timedelta:
    if text is None:
        return default
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise CommandError(f"{option}: {exc}", returncode=2) from exc


class Command(BaseCommand):
    help = "Delete finished workflow runs older than a cutoff, with their rows and artifact blobs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", default=None, metavar="AGE",
                            help="age of finished runs to delete: 30d, 12h, 15m, 90s "
                                 "(default: settings.WORKFLOW['RETENTION'], 30 days)")
        parser.add_argument("--dry-run", action="store_true", help="report what would be removed; change nothing")
        parser.add_argument("--package", default=None, help="only runs of this package")
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                            help=f"runs deleted per transaction (default {DEFAULT_BATCH_SIZE})")
        parser.add_argument("--orphans", action="store_true",
                            help="also delete artifact blobs no artifact row references (older than --orphan-age)")
        parser.add_argument("--orphan-age", default=None, metavar="AGE",
                            help="minimum age of an orphan blob (default 1h)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            default_age = conf.retention()
        except WorkflowError as exc:
            raise CommandError(str(exc)) from exc
        older_than = _duration("--older-than", options["older_than"], default_age)
        orphan_age = _duration("--orphan-age", options["orphan_age"], ORPHAN_MIN_AGE)
        if options["batch_size"] < 1:
            raise CommandError(f"--batch-size must be at least 1, got {options['batch_size']}", returncode=2)
        dry_run = options["dry_run"]
        report = prune_runs(older_than=older_than, package=options["package"], batch_size=options["batch_size"],
                            dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        scope = f" of package {report.package!r}" if report.package else ""
        self.stdout.write(
            f"{verb} {report.runs} finished runs{scope} older than {report.cutoff.isoformat()} "
            f"({report.batches} batches): {report.steps} steps, {report.dependencies} dependencies, "
            f"{report.leases} leases, {report.events} events, {report.records} records, "
            f"{report.artifacts} artifacts, {report.blobs} blobs"
        )
        for key, error in report.failed_blobs:
            self.stderr.write(f"could not delete blob {key}: {error}")
        if report.blob_failures:
            self.stderr.write(f"{report.blob_failures} blobs could not be deleted; "
                              "run prunewf --orphans later to retry them")
        if options["orphans"]:
            orphans = prune_orphans(older_than=orphan_age, dry_run=dry_run)
            for key in orphans.orphan_keys:
                self.stdout.write(f"orphan blob {key}")
            more = orphans.orphans - len(orphans.orphan_keys)
            if more > 0:
                self.stdout.write(f"... and {more} more orphan blobs")
            self.stdout.write(
                f"orphans: scanned {orphans.scanned} blobs, {orphans.referenced} referenced, "
                f"{orphans.too_recent} too recent, {orphans.orphans} orphans, "
                + (f"{orphans.orphans} would be deleted" if dry_run else f"{orphans.deleted} deleted")
            )
            for key, error in orphans.failures:
                self.stderr.write(f"could not check or delete blob {key}: {error}")
