from __future__ import annotations

import re

from django.urls import path, register_converter

from . import views
from .views import consoles


class IdConverter:
    """Run and step ids may hold any printable character, "/" included: escape it as "~2F"."""

    regex = r"[^/]+"
    _unescape = re.compile(r"~(7E|2F)")

    def to_python(self, value: str) -> str:
        return self._unescape.sub(lambda m: "~" if m.group(1) == "7E" else "/", value)

    def to_url(self, value: str) -> str:
        return str(value).replace("~", "~7E").replace("/", "~2F")


register_converter(IdConverter, "wfid")

app_name = "workflow"

urlpatterns = [
    path("", consoles.overview, name="overview"),  # the one overview; /ops/ serves it too
    path("runs/", views.runs, name="runs"),
    path("bulk/runs/", views.runs_bulk, name="runs_bulk"),
    path("runs/<wfid:run_id>/", views.run_detail, name="run"),
    path("runs/<wfid:run_id>/cancel/", views.cancel_run, name="cancel_run"),
    path("runs/<wfid:run_id>/results/", views.results, name="results"),
    path("runs/<wfid:run_id>/artifacts/", views.artifacts, name="artifacts"),
    path("runs/<wfid:run_id>/steps/<wfid:step_id>/", views.step_detail, name="step"),
    path("runs/<wfid:run_id>/steps/<wfid:step_id>/retry/", views.retry_step, name="retry_step"),
    path("artifacts/<wfid:artifact_id>/download/", views.download_artifact, name="download_artifact"),
    path("records/", views.records, name="records"),
    path("search/", views.search, name="search"),
]
