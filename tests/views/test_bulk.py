"""Bulk recovery: the retry preview, its binding, the batched action; and edit-and-retry of one step."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tests.conftest import drain, run_graph
from tests.views.conftest import GATE
from workflow import Package, Registry
from workflow.conf import reset_runtime
from workflow.engine import registry as registry_module
from workflow.models import Event, Run, Step
from workflow.read import bulk

pytestmark = pytest.mark.django_db(transaction=True)

# Three steps fail with gate_closed; four pending steps wait only on them; one waits also on a
# step failing with "boom" (which a gate_closed retry leaves alone); one optional dependent ran.
GRAPH_A = [
    {"id": "g1", "kind": "gate", "retry": 1},
    {"id": "d1", "kind": "noop", "deps": ["g1"]},
    {"id": "d2", "kind": "noop", "deps": ["d1"]},
    {"id": "g2", "kind": "gate", "retry": 1},
    {"id": "d3", "kind": "noop", "deps": ["g2"]},
    {"id": "f", "kind": "fail"},
    {"id": "d4", "kind": "noop", "deps": ["g1", "f"]},
]
GRAPH_B = [
    {"id": "g", "kind": "gate", "retry": 1},
    {"id": "x", "kind": "noop", "deps": ["g"]},
    {"id": "y", "kind": "noop", "optional": ["g"]},
]


@pytest.fixture
def site_registry(monkeypatch: pytest.MonkeyPatch, demo_package: Package) -> Iterator[Registry]:
    """The site's registry knows the test kinds, so edit-and-retry can check "charge" inputs."""
    reg = Registry([demo_package])
    monkeypatch.setattr(registry_module, "registry", reg)
    reset_runtime()
    yield reg
    reset_runtime()


@pytest.fixture
def gate_failures(runtime: Any) -> tuple[str, str]:
    a = run_graph(runtime, GRAPH_A, name="Run A")
    b = run_graph(runtime, GRAPH_B, name="Run B")
    drain(runtime)
    assert Step.objects.filter(state="failed").count() == 4
    return a, b


def _preview(client: Client, **params: str) -> tuple[Any, str]:
    response = client.get(reverse("consoles:steps_retry"), params)
    return response, response.content.decode()


def _count(html: str, name: str) -> int:
    m = re.search(rf'data-count="{name}"><span class="stat-value">(?:≥ )?([\d,]+)<', html)
    assert m, f"no {name} count in the preview"
    return int(m.group(1).replace(",", ""))


def _hidden(html: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert m, name
    return m.group(1)


def _confirm_data(html: str) -> dict[str, str]:
    form = html[html.index('action="/ops/steps/retry/confirm/"'):]
    form = form[:form.index("</form>")]
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form))


def test_retry_preview__counts_steps_dependents_and_runs(operator_client: Client, gate_failures: tuple[str, str]) -> None:
    response, html = _preview(operator_client, code="gate_closed")
    assert response.status_code == 200
    assert _count(html, "steps") == 3
    assert _count(html, "dependents") == 4  # d1, d2, d3, x; not d4 (also blocked by "boom"), not y (ran)
    assert _count(html, "runs") == 2
    assert _count(html, "total") == 7
    for step_id in ("g1", "g2", ">g<"):
        assert step_id in html
    assert 'id="bulk-confirm"' in html and "Retry 3 steps" in html
    assert Event.objects.filter(kind="step_retried").count() == 0  # a preview writes nothing


def test_retry_preview__by_run_and_by_package(operator_client: Client, gate_failures: tuple[str, str]) -> None:
    a, _ = gate_failures
    _, html = _preview(operator_client, run=a)
    assert _count(html, "steps") == 3  # g1, g2 and f
    assert _count(html, "dependents") == 4  # d1, d2, d3 and now d4: both its blockers are retried
    _, html = _preview(operator_client, package="t", queue="default")
    assert _count(html, "steps") == 4
    _, html = _preview(operator_client, package="nope")
    assert "No failed step matches" in html


def test_retry_preview__a_runs_failures_need_no_time_window(operator_client: Client, gate_failures: tuple[str, str]) -> None:
    from datetime import timedelta

    from django.utils import timezone

    a, _ = gate_failures
    Step.objects.filter(run_id=a).update(finished_at=timezone.now() - timedelta(days=3))
    _, html = _preview(operator_client, code="gate_closed")
    assert _count(html, "steps") == 1  # only run B's failure is in the last 24 hours
    _, html = _preview(operator_client, run=a)
    assert _count(html, "steps") == 3


def test_retry_confirm__reruns_what_the_preview_counted(operator_client: Client, runtime: Any,
                                                        gate_failures: tuple[str, str]) -> None:
    _, html = _preview(operator_client, code="gate_closed")
    previewed = _count(html, "total")
    before = set(Step.objects.exclude(state="succeeded").values_list("id", flat=True))
    response = operator_client.post(reverse("consoles:steps_retry_confirm"), _confirm_data(html))
    assert response.status_code == 302
    assert "code=gate_closed" in response["Location"]
    retried = Event.objects.filter(kind="step_retried")
    assert retried.count() == 3
    assert set(retried.values_list("actor", flat=True)) == {"otto"}
    bulk_ids = {e.payload["bulk"]["id"] for e in retried}
    assert len(bulk_ids) == 1
    assert all(e.payload["bulk"]["filters"] == {"state": "failed", "code": "gate_closed", "since": "24h"} for e in retried)
    GATE["open"] = True
    drain(runtime)
    reran = Step.objects.filter(id__in=before, state="succeeded").count()
    assert reran == previewed == 7
    assert Step.objects.get(step_id="d4").state == "pending"
    assert Step.objects.get(step_id="f").state == "failed"
    assert Run.objects.get(name="Run B").state == "succeeded"


def test_retry_confirm__steps_failing_after_the_preview_are_left_alone(operator_client: Client, runtime: Any,
                                                                       gate_failures: tuple[str, str]) -> None:
    _, html = _preview(operator_client, code="gate_closed")
    late = run_graph(runtime, [{"id": "late", "kind": "gate", "retry": 1}])
    drain(runtime)
    response = operator_client.post(reverse("consoles:steps_retry_confirm"), _confirm_data(html))
    assert response.status_code == 302
    assert Step.objects.get(run_id=late, step_id="late").state == "failed"
    assert Event.objects.filter(kind="step_retried").count() == 3


def test_retry_confirm__refuses_more_than_previewed(operator_client: Client, gate_failures: tuple[str, str]) -> None:
    _, html = _preview(operator_client, code="gate_closed")
    data = {**_confirm_data(html), "expected": "2"}
    response = operator_client.post(reverse("consoles:steps_retry_confirm"), data)
    assert response.status_code == 409
    assert "open the preview again" in response.content.decode()
    assert Step.objects.filter(state="failed").count() == 4


def test_retry_confirm__bad_binding_is_400(operator_client: Client, gate_failures: tuple[str, str]) -> None:
    for bad in ({"as_of": "yesterday", "max_id": "9", "expected": "3"}, {"as_of": "2026-01-01T00:00:00", "max_id": "x", "expected": "1"},
                {"as_of": "2026-01-01T00:00:00", "max_id": "²", "expected": "1"}):
        response = operator_client.post(reverse("consoles:steps_retry_confirm"), {"code": "gate_closed", **bad})
        assert response.status_code == 400, bad
    assert Step.objects.filter(state="failed").count() == 4


def test_retry_confirm__needs_operate(viewer_client: Client, gate_failures: tuple[str, str]) -> None:
    _, html = _preview(viewer_client, code="gate_closed")
    assert 'id="bulk-confirm"' not in html and "operate" in html
    response = viewer_client.post(reverse("consoles:steps_retry_confirm"),
                                  {"code": "gate_closed", "as_of": "2030-01-01T00:00:00+00:00", "max_id": "999",
                                   "expected": "9"})
    assert response.status_code == 403
    assert Step.objects.filter(state="failed").count() == 4


def test_retry_confirm__runs_in_bounded_batches(operator_client: Client, runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    run_graph(runtime, [{"id": f"g{i}", "kind": "gate", "retry": 1} for i in range(7)])
    drain(runtime)
    monkeypatch.setattr(bulk, "BATCH_SIZE", 3)
    calls: list[int] = []
    store = type(runtime.store)
    original = store.retry_steps

    def spy(self: Any, pairs: Any, **kw: Any) -> Any:
        calls.append(len(pairs))
        return original(self, pairs, **kw)

    monkeypatch.setattr(store, "retry_steps", spy)
    _, html = _preview(operator_client, code="gate_closed")
    response = operator_client.post(reverse("consoles:steps_retry_confirm"), _confirm_data(html), follow=True)
    assert calls == [3, 3, 1]
    assert "Retried 7 failed steps in 3 batches" in response.content.decode()
    assert Step.objects.filter(state="ready").count() == 7


def test_steps_console__offers_retry_all_for_failures_only(operator_client: Client, gate_failures: tuple[str, str]) -> None:
    html = operator_client.get(reverse("consoles:steps"), {"code": "gate_closed"}).content.decode()
    assert 'id="retry-all"' in html and "/ops/steps/retry/?state=failed&amp;code=gate_closed" in html
    html = operator_client.get(reverse("consoles:steps"), {"state": "succeeded"}).content.decode()
    assert 'id="retry-all"' not in html


# -- edit and retry -----------------------------------------------------------------------------------
@pytest.fixture
def charge_failure(runtime: Any, site_registry: Registry) -> str:
    run_id = run_graph(runtime, [{"id": "charge", "kind": "charge", "input": {"amount": 0}},
                                 {"id": "ship", "kind": "noop", "deps": ["charge"]}])
    drain(runtime)
    assert Step.objects.get(step_id="charge").error_code == "invalid_amount"
    return run_id


def _edit(client: Client, run_id: str, text: str) -> Any:
    return client.post(reverse("workflow:retry_step_edit", args=[run_id, "charge"]), {"input": text})


def test_edit_and_retry__form_on_the_failed_steps_page(operator_client: Client, charge_failure: str) -> None:
    html = operator_client.get(reverse("workflow:step", args=[charge_failure, "charge"])).content.decode()
    assert 'id="edit-input-json"' in html and "Charge" in html
    assert "&quot;amount&quot;: 0" in html
    assert 'id="edit-input" data-keep' in html and '<details class="edit-input" id="edit-input" data-keep="edit-' in html
    panel = operator_client.get(reverse("workflow:step", args=[charge_failure, "charge"]), HTTP_HX_REQUEST="true")
    link = f"/runs/{charge_failure}/steps/charge/?edit=1#edit-input"
    assert link in panel.content.decode() and 'id="edit-input-json"' not in panel.content.decode()
    opened = operator_client.get(reverse("workflow:step", args=[charge_failure, "charge"]), {"edit": "1"}).content.decode()
    assert re.search(r'<details class="edit-input" id="edit-input" data-keep="edit-\d+" open>', opened)
    assert not re.search(r'<details class="edit-input" id="edit-input" data-keep="edit-\d+" open>', html)


@pytest.mark.parametrize(("text", "expected"), [
    ('{"amount": "ten"}', "input.amount: expected an integer"),
    ('{"currency": "USD"}', "input.amount"),
    ('{"amount": 5', "The input is not valid JSON"),
    ('{"amount": 5, "extra": 1}', "extra"),
])
def test_edit_and_retry__validation_errors_change_nothing(operator_client: Client, charge_failure: str, text: str,
                                                          expected: str) -> None:
    response = _edit(operator_client, charge_failure, text)
    assert response.status_code == 400
    html = response.content.decode()
    assert 'aria-invalid="true" aria-describedby="edit-input-error"' in html
    error = re.search(r'<p class="field-error" id="edit-input-error" role="alert">([^<]*)</p>', html)
    assert error and expected in error.group(1), html[:200]
    assert "<details class=\"edit-input\" id=\"edit-input\"" in html and " open>" in html[html.index('id="edit-input"'):][:80]
    step = Step.objects.get(step_id="charge")
    assert step.state == "failed" and step.input == {"amount": 0} and step.original_input is None
    assert not Event.objects.filter(kind__in=["step_retried", "step_input_edited"]).exists()


def test_edit_and_retry__runs_with_the_new_input_and_keeps_the_original(operator_client: Client, runtime: Any,
                                                                        charge_failure: str) -> None:
    response = _edit(operator_client, charge_failure, '{"amount": 5}')
    assert response.status_code == 302
    step = Step.objects.get(step_id="charge")
    assert step.state == "ready" and step.input == {"amount": 5}
    assert step.original_input["input"] == {"amount": 0} and step.original_input["edits"] == 1
    edited = Event.objects.get(kind="step_input_edited")
    assert edited.actor == "otto" and edited.message == "input edited by otto: amount changed"
    assert edited.payload["previous_input"] == {"amount": 0} and edited.payload["input"] == {"amount": 5}
    assert '-  "amount": 0' in edited.payload["diff"] and '+  "amount": 5' in edited.payload["diff"]
    assert Event.objects.get(kind="step_retried").payload["input_edited"] is True
    drain(runtime)
    assert Step.objects.get(step_id="charge").result == {"charged": 5, "currency": "EUR"}
    assert Step.objects.get(step_id="ship").state == "succeeded"
    html = operator_client.get(reverse("workflow:step", args=[charge_failure, "charge"])).content.decode()
    assert "pill-edited" in html and "Original input" in html and 'id="edit-input-json"' not in html


def test_edit_and_retry__second_edit_keeps_the_first_original(operator_client: Client, runtime: Any,
                                                              charge_failure: str) -> None:
    assert _edit(operator_client, charge_failure, '{"amount": -1}').status_code == 302
    drain(runtime)
    assert _edit(operator_client, charge_failure, '{"amount": 2}').status_code == 302
    step = Step.objects.get(step_id="charge")
    assert step.original_input["input"] == {"amount": 0} and step.original_input["edits"] == 2
    assert [e.payload["previous_input"] for e in Event.objects.filter(kind="step_input_edited").order_by("id")] == [
        {"amount": 0}, {"amount": -1}]


def test_edit_and_retry__refused_for_viewers_and_for_steps_not_failed(viewer_client: Client, operator_client: Client,
                                                                       charge_failure: str) -> None:
    assert _edit(viewer_client, charge_failure, '{"amount": 5}').status_code == 403
    response = operator_client.post(reverse("workflow:retry_step_edit", args=[charge_failure, "ship"]),
                                    {"input": "{}"})
    assert response.status_code == 409
    assert Step.objects.get(step_id="charge").input == {"amount": 0}


def test_store_retry_steps__skips_what_cannot_be_retried_with_the_reason(runtime: Any) -> None:
    ok = run_graph(runtime, [{"id": "g", "kind": "gate", "retry": 1}, {"id": "n", "kind": "noop"}])
    gone = run_graph(runtime, [{"id": "g", "kind": "gate", "retry": 1}, {"id": "w", "kind": "noop", "deps": ["g"]}])
    drain(runtime)
    Run.objects.filter(pk=gone).update(state="canceled")  # as if canceled while g was failing (a failed run cannot be)
    done, skipped, batches = runtime.retry_steps(
        [(ok, "g"), (ok, "g"), (ok, "n"), (ok, "ghost"), (gone, "g")], actor="otto", batch_size=2)
    assert (done, batches) == (1, 3)
    assert len(skipped) == 3  # the repeated (ok, "g") is retried once; "n" succeeded, "ghost" is none, "gone" canceled
    assert any("succeeded" in why for why in skipped) and any("ghost" in why for why in skipped)
    assert any("canceled" in why for why in skipped)
    assert Run.objects.get(pk=ok).state == "running"
    assert Event.objects.filter(kind="step_retried", actor="otto").count() == 1


def test_retry_preview_and_confirm__queries_do_not_grow_per_step(operator_client: Client, runtime: Any,
                                                                 django_assert_max_num_queries: Any) -> None:
    n = 600
    run_graph(runtime, [spec for i in range(n) for spec in (
        {"id": f"g{i}", "kind": "gate", "retry": 1}, {"id": f"d{i}", "kind": "noop", "deps": [f"g{i}"]})])
    drain(runtime, max_cycles=1000)
    with django_assert_max_num_queries(20):  # session and user, counts, sample, 2 levels x 2 chunks of the walk
        _, html = _preview(operator_client, code="gate_closed")
    assert (_count(html, "steps"), _count(html, "dependents")) == (n, n)
    with django_assert_max_num_queries(25):  # 2 batches of 500: lock, runs, one update, runs, events each
        response = operator_client.post(reverse("consoles:steps_retry_confirm"), _confirm_data(html))
    assert response.status_code == 302
    assert Step.objects.filter(state="ready").count() == n
    assert Event.objects.filter(kind="step_retried").count() == n


def test_failure_views__link_to_the_preview(operator_client: Client, gate_failures: tuple[str, str]) -> None:
    a, _ = gate_failures
    html = operator_client.get(reverse("workflow:run", args=[a])).content.decode()
    assert f'href="/ops/steps/retry/?run={a}"' in html  # by run: beside "Retry failed steps"
    html = operator_client.get(reverse("consoles:queues")).content.decode()
    assert 'href="/ops/steps/?state=failed&amp;queue=default"' in html  # by queue
    html = operator_client.get(reverse("consoles:packages")).content.decode()
    assert 'href="/ops/steps/?state=failed&amp;package=t"' in html  # by package


def test_store_retry_steps__two_concurrent_bulk_retries_retry_each_step_once(runtime: Any) -> None:
    """The batch's rows are locked in id order: the second retry finds the steps ready and skips them."""
    import threading

    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers with its IMMEDIATE transactions; the row locks matter on PostgreSQL")
    run_id = run_graph(runtime, [{"id": f"g{i}", "kind": "gate", "retry": 1} for i in range(300)])
    drain(runtime)
    pairs = [(run_id, f"g{i}") for i in range(300)]
    results: list[tuple[int, list[str], int]] = []
    barrier = threading.Barrier(2)

    def retry(order: list[tuple[str, str]]) -> None:
        try:
            barrier.wait()
            results.append(runtime.retry_steps(order, actor="otto", batch_size=100))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=retry, args=(p,)) for p in (pairs, pairs[::-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(done for done, _, _ in results) == 300
    assert sum(len(skipped) for _, skipped, _ in results) == 300
    assert Event.objects.filter(kind="step_retried").count() == 300
    assert Step.objects.filter(run_id=run_id, state="ready").count() == 300
