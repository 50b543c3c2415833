# ruff: noqa: F811  (fixtures imported from tests/views/conftest.py are parameters here)
"""The admin: every model registered, engine fields read-only, actions through the operator service."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from tests.conftest import run_graph
from tests.views.conftest import (  # noqa: F401  (fixtures shared with the view tests)
    VIEW_PERMS,
    _close_gate,
    active_run,
    failed_run,
    package_kinds,
    report_run,
)
from workflow import models
from workflow.models import Event, Run, Step

pytestmark = pytest.mark.django_db(transaction=True)
MODELS = [models.Run, models.Step, models.Dependency, models.Lease, models.Artifact, models.Record, models.Event,
          models.Queue, models.Worker]


@pytest.fixture
def admin_client_(transactional_db: Any) -> Client:
    user = User.objects.create_superuser("root", "root@example.test", "pw-root-123")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff_viewer_client(transactional_db: Any) -> Client:
    user = User.objects.create_user("sam", password="pw-sam-123", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="workflow", codename__in=VIEW_PERMS))
    client = Client()
    client.force_login(user)
    return client


def changelist(model: type) -> str:
    return reverse(f"admin:workflow_{model._meta.model_name}_changelist")


def test_every_model_is_registered_without_full_counts() -> None:
    for model in MODELS:
        model_admin = admin.site._registry[model]
        assert model_admin.show_full_result_count is False, model


def test_admin_index__names_every_model_in_plain_english(admin_client_: Client) -> None:
    page = admin_client_.get(reverse("admin:index")).content.decode()
    assert "Dependencies" in page and "Dependencys" not in page


def test_changelists_and_change_pages_render(admin_client_: Client, report_run: str, failed_run: str) -> None:
    for model in MODELS:
        response = admin_client_.get(changelist(model))
        assert response.status_code == 200, model
        obj = model.objects.first()
        if obj is not None:
            url = reverse(f"admin:workflow_{model._meta.model_name}_change", args=[obj.pk])
            assert admin_client_.get(url).status_code == 200, model
    assert admin_client_.get(changelist(Run), {"q": failed_run}).status_code == 200
    assert admin_client_.get(changelist(Step), {"state__exact": "failed"}).status_code == 200


def test_engine_fields_are_read_only_and_rows_link_together(admin_client_: Client, failed_run: str) -> None:
    step = Step.objects.get(run_id=failed_run, step_id="b")
    page = admin_client_.get(reverse("admin:workflow_step_change", args=[step.pk])).content.decode()
    assert 'name="state"' not in page and 'name="lease_token"' not in page
    assert reverse("admin:workflow_run_change", args=[failed_run]) in page  # step -> run
    assert f"{changelist(models.Lease)}?step__id__exact={step.pk}" in page  # step -> attempts
    run_page = admin_client_.get(reverse("admin:workflow_run_change", args=[failed_run])).content.decode()
    assert f"{changelist(Step)}?run__id__exact={failed_run}" in run_page  # run -> steps
    lease = models.Lease.objects.filter(step=step).first()
    lease_page = admin_client_.get(reverse("admin:workflow_lease_change", args=[lease.pk])).content.decode()
    assert reverse("admin:workflow_step_change", args=[step.pk]) in lease_page  # attempt -> step
    assert admin_client_.get(reverse("admin:workflow_step_add")).status_code == 403


def test_action__retry_selected_failed_steps(admin_client_: Client, failed_run: str) -> None:
    picked = Step.objects.filter(run_id=failed_run, step_id__in=["a", "b"]).values_list("pk", flat=True)
    response = admin_client_.post(changelist(Step), {
        "action": "retry_selected_failed_steps", "_selected_action": [str(pk) for pk in picked],
    }, follow=True)
    text = response.content.decode()
    assert "Retried 1 failed steps." in text and "Skipped 1" in text
    assert Step.objects.get(run_id=failed_run, step_id="b").state == "ready"
    assert Event.objects.get(run_id=failed_run, kind="step_retried").actor == "root"


def test_action__cancel_selected_runs(admin_client_: Client, failed_run: str, runtime: Any) -> None:
    active = run_graph(runtime, [{"id": "w", "kind": "noop"}])
    response = admin_client_.post(changelist(Run), {
        "action": "cancel_selected_runs", "_selected_action": [active, failed_run],
    }, follow=True)
    text = response.content.decode()
    assert "Canceled 1 runs." in text and "Skipped 1" in text
    assert Run.objects.get(pk=active).state == "canceled"
    assert Run.objects.get(pk=failed_run).state == "failed"
    assert Event.objects.get(run_id=active, kind="run_canceled").actor == "root"


def test_actions__need_the_operate_permission(staff_viewer_client: Client, runtime: Any) -> None:
    active = run_graph(runtime, [{"id": "w", "kind": "noop"}])
    page = staff_viewer_client.get(changelist(Run)).content.decode()
    assert "cancel_selected_runs" not in page
    staff_viewer_client.post(changelist(Run), {"action": "cancel_selected_runs", "_selected_action": [active]})
    assert Run.objects.get(pk=active).state != "canceled"


def test_active_run__cannot_be_deleted_from_its_page_or_in_bulk(admin_client_: Client, failed_run: str,
                                                                runtime: Any) -> None:
    active_run = run_graph(runtime, [{"id": "wait", "kind": "noop"}])  # after the drain: it stays ready
    assert admin_client_.get(reverse("admin:workflow_run_delete", args=[active_run])).status_code == 403
    assert admin_client_.post(reverse("admin:workflow_run_delete", args=[active_run]), {"post": "yes"}).status_code == 403
    page = admin_client_.get(reverse("admin:workflow_run_change", args=[active_run])).content.decode()
    assert reverse("admin:workflow_run_delete", args=[active_run]) not in page
    response = admin_client_.post(changelist(Run), {"action": "delete_selected", "_selected_action": [active_run, failed_run],
                                                    "post": "yes"}, follow=True)
    assert "Active runs are not deleted" in response.content.decode()
    assert Run.objects.filter(pk=active_run).exists() and not Run.objects.filter(pk=failed_run).exists()
    # Once finished (canceled) it can go.
    from workflow import operator

    operator.cancel_run(active_run)
    assert admin_client_.post(reverse("admin:workflow_run_delete", args=[active_run]), {"post": "yes"}).status_code == 302
    assert not Run.objects.filter(pk=active_run).exists()


def test_big_tables__no_date_hierarchy_and_no_distinct_filters() -> None:
    for model in (models.Step, models.Lease, models.Event, models.Artifact):
        model_admin = admin.site._registry[model]
        assert model_admin.date_hierarchy is None, model
    step_filters = admin.site._registry[models.Step].list_filter
    assert "kind" not in step_filters and "queue" not in step_filters
    assert "kind" not in admin.site._registry[models.Event].list_filter  # a fixed list instead


def test_big_tables__changelists_read_one_page(admin_client_: Client, failed_run: str,
                                               django_assert_max_num_queries: Any) -> None:
    for model in (models.Step, models.Event, models.Lease):
        with django_assert_max_num_queries(12):
            response = admin_client_.get(changelist(model))
        assert response.status_code == 200
    kinds = admin_client_.get(changelist(models.Event), {"kind": "run_failed"})
    assert kinds.status_code == 200 and kinds.context["cl"].result_count == 1


def test_json_fields__shown_read_only_and_escaped(admin_client_: Client, failed_run: str) -> None:
    from tests.views.conftest import EVIL

    step = Step.objects.get(run_id=failed_run, step_id="b")
    Step.objects.filter(pk=step.pk).update(result={"html": EVIL})
    page = admin_client_.get(reverse("admin:workflow_step_change", args=[step.pk])).content.decode()
    assert "&lt;script&gt;" in page and EVIL not in page
    assert 'name="result"' not in page and 'name="error"' not in page  # no form field: read-only


def test_display__times_carry_minutes_and_a_step_shows_its_run_once(admin_client_: Client, failed_run: str) -> None:
    import re

    listing = admin_client_.get(reverse("admin:workflow_run_changelist")).content.decode()
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", listing)
    assert "a.m." not in listing and "p.m." not in listing
    assert "workflow/admin.css" in listing
    step = Step.objects.filter(run_id=failed_run).first()
    page = admin_client_.get(reverse("admin:workflow_step_change", args=[step.pk])).content.decode()
    rows = re.findall(r'class="form-row field-([a-z_]+)', page)
    assert "run_link" in rows and "run" not in rows, rows
