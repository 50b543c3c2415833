"""Operator actions: retry, cancel, bulk; refusals are clear 4xx messages, never 500."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tests.conftest import run_graph
from workflow.models import Event, Run, Step

pytestmark = pytest.mark.django_db(transaction=True)


def test_retry__step_that_is_not_failed_is_409_with_message(operator_client: Client, failed_run: str) -> None:
    url = reverse("workflow:retry_step", args=[failed_run, "a"])  # a succeeded
    response = operator_client.post(url)
    assert response.status_code == 409
    assert "only a failed step can be retried" in response.content.decode()
    htmx = operator_client.post(url, HTTP_HX_REQUEST="true")
    assert htmx.status_code == 409
    assert htmx["HX-Retarget"] == "#toasts"
    assert "only a failed step can be retried" in htmx.content.decode()


def test_retry__unknown_step_is_404(operator_client: Client, failed_run: str) -> None:
    response = operator_client.post(reverse("workflow:retry_step", args=[failed_run, "nope"]))
    assert response.status_code == 404
    assert "does not exist" in response.content.decode()


def test_cancel__unknown_run_is_404(operator_client: Client, transactional_db: Any) -> None:
    response = operator_client.post(reverse("workflow:cancel_run", args=["no-such-run"]), HTTP_HX_REQUEST="true")
    assert response.status_code == 404
    assert "no-such-run" in response.content.decode()


def test_cancel__finished_run_is_409(operator_client: Client, failed_run: str) -> None:
    response = operator_client.post(reverse("workflow:cancel_run", args=[failed_run]))
    assert response.status_code == 409
    assert "already failed" in response.content.decode()


def test_cancel__active_run_from_the_panel_updates_it_in_place(operator_client: Client, active_run: str) -> None:
    response = operator_client.post(reverse("workflow:cancel_run", args=[active_run]), {"step": "wait"},
                                    HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL=f"http://testserver/runs/{active_run}/")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-step-id="wait"' in body  # the panel
    assert 'id="run-live" class="run-head card" hx-swap-oob="true"' in body  # header, out of band
    assert "canceled" in body
    assert Run.objects.get(pk=active_run).state == "canceled"
    assert Event.objects.get(run_id=active_run, kind="run_canceled").actor == "otto"


def test_retry__htmx_returns_the_panel_and_restarts_live_refresh(operator_client: Client, failed_run: str) -> None:
    response = operator_client.post(reverse("workflow:retry_step", args=[failed_run, "b"]), HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert response.status_code == 200
    assert 'data-step-id="b"' in body
    assert 'hx-trigger="every 3s"' in body  # the run is active again: the header polls
    assert "will run again" in body  # the toast, out of band


def test_bulk__cancel_reports_counts_and_skips(operator_client: Client, runtime: Any, failed_run: str) -> None:
    active = [run_graph(runtime, [{"id": "w", "kind": "noop"}]) for _ in range(2)]
    response = operator_client.post(reverse("workflow:runs_bulk"),
                                    {"action": "cancel", "run": [*active, failed_run], "next": "/runs/?state=running"},
                                    follow=True)
    assert response.redirect_chain[-1][0] == "/runs/?state=running"
    text = response.content.decode()
    assert "Canceled 2 of 3 selected runs" in text and "1 skipped" in text
    assert set(Run.objects.filter(pk__in=active).values_list("state", flat=True)) == {"canceled"}


def test_bulk__retry_failed(operator_client: Client, failed_run: str) -> None:
    response = operator_client.post(reverse("workflow:runs_bulk"), {"action": "retry_failed", "run": [failed_run]},
                                    HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response["HX-Refresh"] == "true"
    assert Step.objects.get(run_id=failed_run, step_id="b").state == "ready"
    assert Event.objects.get(run_id=failed_run, kind="step_retried").actor == "otto"


def test_bulk__refuses_offsite_next(operator_client: Client, failed_run: str) -> None:
    response = operator_client.post(reverse("workflow:runs_bulk"),
                                    {"action": "retry_failed", "run": [failed_run], "next": "https://evil.test/"})
    assert response["Location"] == reverse("workflow:runs")


def test_bulk__unknown_action_and_empty_selection(operator_client: Client, failed_run: str) -> None:
    r = operator_client.post(reverse("workflow:runs_bulk"), {"action": "explode", "run": [failed_run]}, follow=True)
    assert "Unknown bulk action" in r.content.decode()
    r = operator_client.post(reverse("workflow:runs_bulk"), {"action": "cancel"}, follow=True)
    assert "Select at least one run" in r.content.decode()
