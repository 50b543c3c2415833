"""URLs of the operator consoles; the site includes them at ``ops/`` (namespace "consoles")."""

from __future__ import annotations

from django.urls import path

from . import urls as _converters  # noqa: F401  (registers the "wfid" converter)
from .views import consoles, consoles_start

app_name = "consoles"

urlpatterns = [
    path("", consoles.overview, name="overview"),
    path("steps/", consoles.steps, name="steps"),
    path("queues/", consoles.queues, name="queues"),
    path("queues/<wfid:name>/pause/", consoles.pause_queue, name="pause_queue"),
    path("queues/<wfid:name>/resume/", consoles.resume_queue, name="resume_queue"),
    path("events/", consoles.events, name="events"),
    path("packages/", consoles_start.packages, name="packages"),
    path("packages/<str:name>/start/", consoles_start.start_run, name="start_run"),
    path("submissions/", consoles_start.submissions, name="submissions"),
    path("engine/", consoles.engine, name="engine"),
]
