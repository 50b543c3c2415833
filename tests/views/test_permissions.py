"""Who may see and do what: anonymous, viewer (view permissions only), operator; CSRF enforced."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from workflow.models import Artifact, Event, Run, Step

pytestmark = pytest.mark.django_db(transaction=True)


def page_urls(run_id: str, artifact_id: str) -> list[str]:
    return [
        reverse("workflow:overview"),
        reverse("workflow:runs"),
        reverse("workflow:run", args=[run_id]),
        reverse("workflow:step", args=[run_id, "report"]),
        reverse("workflow:results", args=[run_id]),
        reverse("workflow:artifacts", args=[run_id]),
        reverse("workflow:download_artifact", args=[artifact_id]),
        reverse("workflow:records"),
        reverse("consoles:steps_retry") + "?code=boom",
    ]


def action_posts(run_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (reverse("workflow:retry_step", args=[run_id, "b"]), {}),
        (reverse("workflow:cancel_run", args=[run_id]), {}),
        (reverse("workflow:runs_bulk"), {"action": "cancel", "run": [run_id]}),
        (reverse("workflow:runs_bulk"), {"action": "retry_failed", "run": [run_id]}),
        (reverse("workflow:retry_step_edit", args=[run_id, "b"]), {"input": "{}"}),
        (reverse("consoles:steps_retry_confirm"), {"code": "boom", "as_of": "2030-01-01T00:00:00+00:00",
                                                   "max_id": "999999", "expected": "99"}),
    ]


def test_pages__anonymous_is_redirected_to_login(client: Client, report_run: str) -> None:
    artifact = Artifact.objects.filter(run_id=report_run).first()
    for url in page_urls(report_run, artifact.pk):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login") + "?next="), url


def test_actions__anonymous_is_redirected_and_nothing_changes(client: Client, failed_run: str) -> None:
    for url, data in action_posts(failed_run):
        response = client.post(url, data)
        assert response.status_code == 302 and "/login/" in response["Location"], url
    assert Run.objects.get(pk=failed_run).state == "failed"


def test_pages__viewer_sees_every_page(viewer_client: Client, report_run: str) -> None:
    artifact = Artifact.objects.filter(run_id=report_run).first()
    for url in page_urls(report_run, artifact.pk):
        assert viewer_client.get(url).status_code == 200, url


def test_pages__user_without_view_permission_gets_403(client: Client, report_run: str, django_user_model: Any) -> None:
    client.force_login(django_user_model.objects.create_user("nobody", password="x-nobody-1"))
    artifact = Artifact.objects.filter(run_id=report_run).first()
    for url in page_urls(report_run, artifact.pk):
        assert client.get(url).status_code == 403, url


def test_actions__viewer_gets_403_and_nothing_changes(viewer_client: Client, failed_run: str) -> None:
    for url, data in action_posts(failed_run):
        assert viewer_client.post(url, data).status_code == 403, url
        assert viewer_client.post(url, data, HTTP_HX_REQUEST="true").status_code == 403, url
    assert Run.objects.get(pk=failed_run).state == "failed"
    assert Step.objects.get(run_id=failed_run, step_id="b").state == "failed"


def test_pages__viewer_sees_no_action_buttons(viewer_client: Client, failed_run: str) -> None:
    body = viewer_client.get(reverse("workflow:run", args=[failed_run]) + "?step=b").content.decode()
    assert "Retry step" not in body and "Cancel run" not in body
    assert "Retry failed steps" not in viewer_client.get(reverse("workflow:runs")).content.decode()


def test_retry__operator_can_act_and_the_event_names_them(operator_client: Client, failed_run: str) -> None:
    response = operator_client.post(reverse("workflow:retry_step", args=[failed_run, "b"]))
    assert response.status_code == 302
    assert Step.objects.get(run_id=failed_run, step_id="b").state == "ready"
    event = Event.objects.get(run_id=failed_run, kind="step_retried")
    assert event.actor == "otto"
    page = operator_client.get(reverse("workflow:run", args=[failed_run])).content.decode()
    assert "step_retried" in page and "by otto" in page


def test_actions__get_is_not_allowed(operator_client: Client, failed_run: str) -> None:
    for url, _data in action_posts(failed_run):
        assert operator_client.get(url).status_code == 405, url


def test_actions__csrf_is_enforced(operator_user: Any, failed_run: str) -> None:
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(operator_user)
    for url, data in action_posts(failed_run):
        assert csrf_client.post(url, data).status_code == 403, url
    assert Step.objects.get(run_id=failed_run, step_id="b").state == "failed"
    # With the token from the page (as htmx sends it, in the X-CSRFToken header), it works.
    page = csrf_client.get(reverse("workflow:run", args=[failed_run]))
    token = page.cookies["csrftoken"].value
    response = csrf_client.post(reverse("workflow:retry_step", args=[failed_run, "b"]),
                                HTTP_X_CSRFTOKEN=token, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert Step.objects.get(run_id=failed_run, step_id="b").state == "ready"


def test_body__carries_the_csrf_header_for_htmx(operator_client: Client, failed_run: str) -> None:
    body = operator_client.get(reverse("workflow:runs")).content.decode()
    assert "hx-headers='{\"X-CSRFToken\": \"" in body


# -- panels: each part of a page needs its own view permission -------------------------------------
PANEL_PARTS = {
    # permission: (what the step panel / run page shows with it, the line shown without it)
    "view_lease": ("checking the gate (attempt 1)", "Attempts and their log lines are hidden"),
    "view_event": ("step_failed", "Events are hidden"),
    "view_record": ("Records written <span", "Records are hidden"),
    "view_artifact": ("table.csv", "Artifacts are hidden"),
}


def _user_with(django_user_model: Any, name: str, codenames: list[str]) -> Client:
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(name, password="x-pw-123456")
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="workflow", codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("missing", sorted(PANEL_PARTS))
def test_panels__hide_what_the_viewer_may_not_see_with_a_line_saying_so(
    django_user_model: Any, runtime: Any, missing: str
) -> None:
    from tests.conftest import drain, run_graph

    run_id = run_graph(runtime, [{"id": "g", "kind": "gate", "retry": 1}, {"id": "report", "kind": "report"}])
    drain(runtime)
    granted = ["view_run", "view_step", *(p for p in PANEL_PARTS if p != missing)]
    client = _user_with(django_user_model, f"u-{missing}", granted)
    shown, hidden_line = PANEL_PARTS[missing]
    step = "report" if missing in ("view_record", "view_artifact") else "g"
    for url in (reverse("workflow:step", args=[run_id, step]), reverse("workflow:run", args=[run_id]) + f"?step={step}"):
        body = client.get(url).content.decode()
        assert hidden_line in body, (missing, url)
        assert shown not in body, (missing, url)
    # With every permission, the same parts are there and no line says anything is hidden.
    full = _user_with(django_user_model, f"all-{missing}", ["view_run", "view_step", *PANEL_PARTS])
    body = full.get(reverse("workflow:step", args=[run_id, step])).content.decode()
    assert shown in body and "are hidden" not in body


def test_run_page__timeline_and_events_need_their_permissions(django_user_model: Any, failed_run: str) -> None:
    client = _user_with(django_user_model, "plain", ["view_run", "view_step"])
    body = client.get(reverse("workflow:run", args=[failed_run])).content.decode()
    assert "Attempts are hidden" in body and "Events are hidden" in body
    assert 'class="tl-bar' not in body and "run_failed" not in body
    live = client.get(reverse("workflow:run", args=[failed_run]) + "?fragment=live", HTTP_HX_REQUEST="true")
    assert "Attempts are hidden" in live.content.decode() and "run_failed" not in live.content.decode()
