"""Site hardening: CSP on every page, login throttling, proxy header on demand, 500s logged."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


def dashboard_urls(run_id: str) -> list[str]:
    return [
        reverse("workflow:overview"), reverse("workflow:runs"), reverse("workflow:run", args=[run_id]),
        reverse("workflow:step", args=[run_id, "report"]), reverse("workflow:results", args=[run_id]),
        reverse("workflow:artifacts", args=[run_id]), reverse("workflow:records"),
        reverse("workflow:search") + "?q=nothing-matches-this",
        reverse("consoles:steps"), reverse("consoles:queues"), reverse("consoles:events"),
        reverse("consoles:packages"), reverse("consoles:engine"), reverse("consoles:start_run", args=["t"]),
        reverse("admin:index"), reverse("admin:workflow_step_changelist"),
    ]


def test_csp__every_page_has_a_strict_policy_and_no_inline_script(operator_client: Client, report_run: str) -> None:
    User.objects.filter(username="otto").update(is_staff=True, is_superuser=True)
    for url in [*dashboard_urls(report_run), reverse("login")]:
        client = operator_client if url != reverse("login") else Client()
        response = client.get(url)
        assert response.status_code == 200, url
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-eval" not in policy, (url, policy)
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
        body = response.content.decode()
        if url.startswith("/admin/"):
            continue  # Django's own templates: covered by the policy, checked in the browser test
        for tag in re.findall(r"<script\b[^>]*>", body):
            assert "src=" in tag, (url, tag)  # no inline script
        assert not re.search(r"\shx-on[:-]|\son[a-z]+=|js:|javascript:", body), url
        for trigger in re.findall(r'hx-trigger="([^"]*)"', body):  # an event filter [..] needs eval
            for part in trigger.split(","):
                assert not re.match(r"\s*(every\s+\S+|[\w:.-]+)\s*\[", part), (url, trigger)


def test_htmx__configured_without_eval(operator_client: Client) -> None:
    body = operator_client.get(reverse("workflow:runs")).content.decode()
    config = re.search(r'<meta name="htmx-config" content=\'([^\']*)\'', body).group(1)
    assert '"allowEval":false' in config and '"includeIndicatorStyles":false' in config
    assert "workflow/dashboard.js" in body


def test_download__keeps_its_own_sandbox_policy(operator_client: Client, report_run: str) -> None:
    from workflow.models import Artifact

    artifact = Artifact.objects.filter(run_id=report_run, name="page.html").get()
    response = operator_client.get(reverse("workflow:download_artifact", args=[artifact.pk]))
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"


def test_logout__clears_the_htmx_history_cache() -> None:
    script = (ROOT / "workflow/static/workflow/dashboard.js").read_text()
    assert 'removeItem(HISTORY_KEY)' in script and '"htmx-history-cache"' in script
    assert 'form[data-logout]' in script and 'classList.contains("login-page")' in script


def test_login__thirty_wrong_passwords_are_throttled(operator_user: Any) -> None:
    client = Client()
    statuses = [client.post(reverse("login"), {"username": "otto", "password": f"wrong-{i}"}).status_code
                for i in range(30)]
    assert statuses[:9] == [200] * 9  # the form again, with its error
    assert set(statuses[10:]) == {429}, statuses
    locked = client.post(reverse("login"), {"username": "otto", "password": "pw-otto-123"})
    assert locked.status_code == 429 and "Too many failed logins" in locked.content.decode()
    # Another user from the same address is not locked out by otto's failures.
    User.objects.create_user("vera", password="pw-vera-123")
    other = client.post(reverse("login"), {"username": "vera", "password": "pw-vera-123"})
    assert other.status_code == 302


def test_login__a_right_password_resets_the_count(operator_user: Any) -> None:
    client = Client()
    for i in range(8):
        client.post(reverse("login"), {"username": "otto", "password": f"wrong-{i}"})
    assert client.post(reverse("login"), {"username": "otto", "password": "pw-otto-123"}).status_code == 302
    client.logout()
    for i in range(8):
        assert client.post(reverse("login"), {"username": "otto", "password": f"again-{i}"}).status_code == 200


def _production(tmp_path: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "DJANGO_SETTINGS_MODULE": "wfsite.production", "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
            "DJANGO_ALLOWED_HOSTS": "testserver", "WFSITE_VAR_DIR": str(tmp_path), **env}
    full.pop("DATABASE_URL", None)
    full.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return subprocess.run([sys.executable, "-c", f"import django; django.setup()\n{code}"], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=60)


def test_proxy_ssl_header__only_when_the_deployment_is_behind_a_proxy(tmp_path: Path) -> None:
    show = "from django.conf import settings; print(repr(settings.SECURE_PROXY_SSL_HEADER))"
    assert _production(tmp_path, show).stdout.strip() == "None"
    behind = _production(tmp_path, show, DJANGO_BEHIND_PROXY="1")
    assert behind.stdout.strip() == "('HTTP_X_FORWARDED_PROTO', 'https')", behind.stderr


def test_production__a_500_is_logged_with_its_traceback(tmp_path: Path) -> None:
    # No tables in a fresh var dir: the login POST fails in the database, a real 500.
    code = (
        "from django.test import Client\n"
        "r = Client(raise_request_exception=False).post('/login/', {'username': 'a', 'password': 'b'}, secure=True)\n"
        "print('status', r.status_code)\n"
    )
    result = _production(tmp_path, code)
    assert "status 500" in result.stdout, result.stdout + result.stderr
    assert "ERROR django.request Internal Server Error: /login/" in result.stderr
    assert "Traceback (most recent call last)" in result.stderr and "OperationalError" in result.stderr
