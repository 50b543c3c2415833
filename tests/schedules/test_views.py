"""The Schedules page and its actions: permissions, CSRF, audit, nothing rendered as live HTML."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from workflow import Registry
from workflow.conf import reset_runtime
from workflow.models import Event, Run, Schedule
from workflow.schedules import reconcile

pytestmark = pytest.mark.django_db(transaction=True)


def user_with(name: str, *codenames: str) -> Client:
    user = User.objects.create_user(name, password="pw")
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="workflow", codename__in=codenames))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


@pytest.fixture
def stored(demo_package):
    reset_runtime()
    demo_package.schedule("nightly", cron="0 3 * * *", timezone="Europe/Paris",
                          input={"steps": [{"id": "a", "kind": "noop", "input": {"note": "<b>x</b>"}}]})
    reconcile(Registry([demo_package]), now=datetime(2026, 1, 1, 12, tzinfo=UTC))
    yield Schedule.objects.get()
    reset_runtime()


def test_page__lists_the_schedule_in_words_with_five_next_fire_times(stored):
    client = user_with("viewer", "view_schedule", "view_run")
    response = client.get(reverse("workflow:schedules"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "At 03:00 every day" in html and "Europe/Paris" in html
    assert html.count('data-local>') >= 5
    assert "Run now" not in html, "a viewer sees no actions"


def test_page__needs_login_and_the_view_permission(stored):
    assert Client().get(reverse("workflow:schedules")).status_code == 302
    assert user_with("nobody").get(reverse("workflow:schedules")).status_code == 403


def test_actions__need_operate_and_csrf_and_are_audited(stored):
    url = reverse("workflow:pause_schedule", args=["t:nightly"])
    assert user_with("viewer", "view_schedule", "view_run").post(url).status_code == 403
    operator = user_with("op", "view_schedule", "view_run", "operate")
    assert operator.post(url).status_code == 403, "no CSRF token"
    page = operator.get(reverse("workflow:schedules"))
    token = page.cookies["csrftoken"].value
    assert operator.post(url, HTTP_X_CSRFTOKEN=token).status_code == 302
    assert Schedule.objects.get().paused
    assert operator.post(reverse("workflow:resume_schedule", args=["t:nightly"]), HTTP_X_CSRFTOKEN=token).status_code == 302
    response = operator.post(reverse("workflow:run_schedule_now", args=["t:nightly"]), HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 302
    run = Run.objects.get()
    assert run.id.startswith("sched:t:nightly:") and run.metadata["started_by"] == "op"
    assert list(Event.objects.filter(actor="op").order_by("id").values_list("kind", flat=True)) == [
        "schedule_paused", "schedule_resumed", "schedule_run_now"]
    html = operator.get(reverse("workflow:schedules")).content.decode()
    assert run.id in html and "manual by op" in html


def test_unknown_schedule__is_a_404_not_a_500(stored):
    operator = user_with("op", "view_schedule", "view_run", "operate")
    token = operator.get(reverse("workflow:schedules")).cookies["csrftoken"].value
    response = operator.post(reverse("workflow:pause_schedule", args=["t:nope"]), HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 404 and b"unknown schedule" in response.content


def test_get_on_an_action__is_refused(stored):
    operator = user_with("op", "view_schedule", "view_run", "operate")
    assert operator.get(reverse("workflow:run_schedule_now", args=["t:nightly"])).status_code == 405


def test_removed_schedule__is_listed_as_removed_without_actions_or_fire_times(stored, demo_package):
    demo_package.schedules.clear()
    reconcile(Registry([demo_package]), now=datetime(2026, 1, 2, tzinfo=UTC))
    operator = user_with("op", "view_schedule", "view_run", "operate")
    html = operator.get(reverse("workflow:schedules")).content.decode()
    assert "<span class=\"tag\" data-status>removed</span>" in html
    assert "no longer declared in code" in html and "none (removed)" in html
    assert "Run now" not in html
