"""Who may call the API: the permission matrix, tokens (bad, revoked, last used), CSRF, request ids."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from tests.api.conftest import API, ApiClient, error_of, token_for
from workflow.api.tokens import revoke
from workflow.models import ApiToken, Event

READS = ["/runs", "/queues", "/events", "/packages", "/engine", "/records"]


@pytest.mark.parametrize("path", READS)
def test_reads__anonymous_gets_401_with_the_error_shape(anon: ApiClient, path: str) -> None:
    response = anon.get(path)
    assert response.status_code == 401
    assert error_of(response)["code"] == "unauthorized"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", READS)
def test_reads__no_permission_gets_403_naming_it(as_nobody: ApiClient, path: str) -> None:
    response = as_nobody.get(path)
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "forbidden" and "workflow.view_" in error["message"]


@pytest.mark.parametrize("path", READS)
def test_reads__viewer_gets_200(as_viewer: ApiClient, path: str) -> None:
    assert as_viewer.get(path).status_code == 200


def _actions(run_id: str) -> list[tuple[str, Any]]:
    return [
        (f"/runs/{run_id}/cancel", None),
        (f"/runs/{run_id}/steps/b/retry", None),
        (f"/runs/{run_id}/retry-failed", None),
        ("/queues/default/pause", None),
        ("/queues/default/resume", None),
        ("/runs", {"package": "t", "input": {"steps": [{"id": "x", "kind": "noop"}]}}),
    ]


def test_actions__matrix(anon: ApiClient, as_nobody: ApiClient, as_viewer: ApiClient, failed_run: str) -> None:
    for path, body in _actions(failed_run):
        assert anon.post(path, body).status_code == 401, path
        assert as_nobody.post(path, body).status_code == 403, path
        response = as_viewer.post(path, body)
        assert response.status_code == 403, path
        assert "workflow.operate" in error_of(response)["message"]


def test_actions__operator_acts_and_the_event_names_the_user(as_operator: ApiClient, failed_run: str) -> None:
    response = as_operator.post(f"/runs/{failed_run}/steps/b/retry")
    assert response.status_code == 200, response.content
    event = Event.objects.filter(run_id=failed_run, kind="step_retried").get()
    assert event.actor == "otto"


def test_token__bad_revoked_and_other_schemes_are_401(viewer: User) -> None:
    raw = token_for(viewer)
    assert ApiClient(raw).get("/runs").status_code == 200
    assert error_of(ApiClient(raw + "x").get("/runs"))["code"] == "bad_token"
    assert ApiClient("wf_nonsense").get("/runs").status_code == 401
    assert ApiClient(**{"Authorization": "Basic dmVyYTpwdw=="}).get("/runs").status_code == 401
    revoke(ApiToken.objects.filter(user=viewer))
    response = ApiClient(raw).get("/runs")
    assert response.status_code == 401 and error_of(response)["code"] == "bad_token"


def test_token__inactive_user_is_401(viewer: User) -> None:
    raw = token_for(viewer)
    viewer.is_active = False
    viewer.save()
    assert ApiClient(raw).get("/runs").status_code == 401


def test_token__stored_hashed_and_last_used_recorded(viewer: User) -> None:
    raw = token_for(viewer)
    token = ApiToken.objects.get(user=viewer)
    assert raw not in (token.digest, token.prefix) and token.last_used_at is None
    assert raw.startswith(token.prefix)
    ApiClient(raw).get("/runs")
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_session__get_works_and_post_needs_csrf(operator_user: User, failed_run: str) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator_user)
    assert client.get(f"{API}/runs").status_code == 200
    response = client.post(f"{API}/runs/{failed_run}/steps/b/retry")
    assert response.status_code == 403
    assert error_of(response)["code"] == "csrf_failed"
    client.get("/login/")  # sets the CSRF cookie, as the dashboard does
    csrf = client.cookies["csrftoken"].value
    response = client.post(f"{API}/runs/{failed_run}/steps/b/retry", headers={"X-CSRFToken": csrf})
    assert response.status_code == 200, response.content


def test_token__post_needs_no_csrf(operator_user: User, failed_run: str) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post(f"{API}/runs/{failed_run}/steps/b/retry",
                           headers={"Authorization": f"Bearer {token_for(operator_user)}"})
    assert response.status_code == 200, response.content


def test_request_id__propagated_or_made(as_viewer: ApiClient) -> None:
    assert as_viewer.get("/runs", **{"X-Request-Id": "trace-abc.123"})["X-Request-Id"] == "trace-abc.123"
    made = as_viewer.get("/runs", **{"X-Request-Id": "bad id\twith spaces"})["X-Request-Id"]
    assert made != "bad id\twith spaces" and len(made) == 32
    assert ApiClient().get("/no/such/thing")["X-Request-Id"]


def test_createapitoken__prints_the_token_alone_on_its_last_line(viewer: User) -> None:
    out, err = StringIO(), StringIO()
    call_command("createapitoken", "vera", "--name", "ci", stdout=out, stderr=err)
    raw = out.getvalue().strip().splitlines()[-1]
    assert raw.startswith("wf_") and " " not in raw
    assert ApiToken.objects.get(user=viewer).name == "ci"
    assert ApiClient(raw).get("/runs").status_code == 200
    assert "cannot be shown again" in err.getvalue()


def test_createapitoken__unknown_user_is_an_error(transactional_db: Any) -> None:
    with pytest.raises(CommandError, match="no user named 'ghost'"):
        call_command("createapitoken", "ghost")


def test_admin__adds_a_token_shown_once_and_revokes(transactional_db: Any, viewer: User) -> None:
    admin = User.objects.create_superuser("root", "r@x", "pw-root-123")
    client = Client()
    client.force_login(admin)
    response = client.post("/admin/workflow/apitoken/add/", {"user": viewer.pk, "name": "from-admin"}, follow=True)
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    raw = next(word for m in shown for word in m.split() if word.startswith("wf_"))
    token = ApiToken.objects.get(name="from-admin")
    assert token.user == viewer and raw not in token.digest
    assert ApiClient(raw).get("/runs").status_code == 200
    client.post("/admin/workflow/apitoken/", {"action": "revoke_tokens", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert ApiClient(raw).get("/runs").status_code == 401


def test_admin__renaming_keeps_the_token(transactional_db: Any, viewer: User) -> None:
    admin = User.objects.create_superuser("root", "r@x", "pw-root-123")
    raw = token_for(viewer, name="old")
    token = ApiToken.objects.get(user=viewer)
    client = Client()
    client.force_login(admin)
    client.post(f"/admin/workflow/apitoken/{token.pk}/change/", {"name": "new"})
    token.refresh_from_db()
    assert token.name == "new" and ApiClient(raw).get("/runs").status_code == 200
