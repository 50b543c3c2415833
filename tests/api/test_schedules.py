"""The API's schedules: the list the Schedules page shows, and the same three actions (audited)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.api.conftest import error_of
from workflow import Registry
from workflow.conf import reset_runtime
from workflow.models import Event, Run, Schedule
from workflow.schedules import reconcile

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stored(demo_package):
    reset_runtime()
    demo_package.schedule("nightly", cron="0 3 * * *", timezone="Europe/Paris",
                          input={"steps": [{"id": "a", "kind": "noop"}]})
    reconcile(Registry([demo_package]), now=datetime(2026, 1, 1, 12, tzinfo=UTC))
    yield Schedule.objects.get()
    reset_runtime()


def test_schedules__listed_with_cron_in_words_and_next_fires(stored, as_viewer):
    response = as_viewer.get("/schedules")
    assert response.status_code == 200, response.content
    (item,) = response.json()
    assert (item["key"], item["timezone"], item["status"]) == ("t:nightly", "Europe/Paris", "active")
    assert item["description"] == "At 03:00 every day"
    assert len(item["next_fires"]) == 5
    assert item["recent_runs"] == []


def test_schedule_actions__need_operate(stored, as_viewer):
    response = as_viewer.post("/schedules/t:nightly/pause", {})
    assert response.status_code == 403
    assert error_of(response)["code"] == "forbidden"
    assert not Schedule.objects.get().paused


def test_schedule_actions__pause_resume_and_run_now_are_audited(stored, as_operator, operator_user):
    assert as_operator.post("/schedules/t:nightly/pause", {}).status_code == 200
    assert Schedule.objects.get().paused
    assert as_operator.get("/schedules").json()[0]["status"] == "paused"
    assert as_operator.post("/schedules/t:nightly/resume", {}).status_code == 200
    assert not Schedule.objects.get().paused
    started = as_operator.post("/schedules/t:nightly/run", {})
    assert started.status_code == 200, started.content
    run_id = started.json()["run_id"]
    assert Run.objects.get(pk=run_id).metadata["trigger"] == "manual"
    kinds = list(Event.objects.filter(actor=operator_user.username).order_by("id").values_list("kind", flat=True))
    assert kinds[-3:] == ["schedule_paused", "schedule_resumed", "schedule_run_now"]


def test_schedule_actions__unknown_schedule_is_404(stored, as_operator):
    response = as_operator.post("/schedules/t:nope/run", {})
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"
