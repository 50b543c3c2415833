"""Dashboard views: thin functions over ``workflow.queries`` (reads) and ``workflow.operator`` (actions)."""

from __future__ import annotations

from .browse import artifacts, download_artifact, records, results
from .run import cancel_run, run_detail
from .runs import runs, runs_bulk
from .search import search
from .step import retry_step, retry_step_edit, step_detail

__all__ = [
    "artifacts", "cancel_run", "download_artifact", "records", "results", "retry_step", "retry_step_edit", "run_detail",
    "runs", "runs_bulk", "search", "step_detail",
]
