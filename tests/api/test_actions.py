"""Action endpoints: start (201/200/409/422), cancel, retry, retry-failed, pause/resume; bad bodies."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from tests.api.conftest import ApiClient, error_of
from workflow.models import Event, Queue, Run, Step

STEPS = {"steps": [{"id": "x", "kind": "noop"}]}


def test_start__201_then_200_then_409(as_operator: ApiClient) -> None:
    body = {"package": "t", "input": STEPS, "run_id": "api-run-1", "name": "From the API", "metadata": {"src": "ci"}}
    first = as_operator.post("/runs", body)
    assert first.status_code == 201, first.content
    assert first.json() == {"id": "api-run-1", "package": "t", "name": "From the API", "created": True}
    run = Run.objects.get(pk="api-run-1")
    assert run.metadata == {"src": "ci", "started_by": "otto"}
    again = as_operator.post("/runs", body)
    assert again.status_code == 200 and again.json()["created"] is False
    conflict = as_operator.post("/runs", {**body, "input": {"steps": [{"id": "y", "kind": "noop"}]}})
    assert conflict.status_code == 409 and error_of(conflict)["code"] == "run_conflict"
    assert Run.objects.count() == 1


def test_start__without_run_id_makes_one(as_operator: ApiClient) -> None:
    response = as_operator.post("/runs", {"package": "t", "input": STEPS})
    assert response.status_code == 201
    assert Run.objects.filter(pk=response.json()["id"]).exists()


def test_start__typed_input_error_names_the_field(as_operator: ApiClient) -> None:
    response = as_operator.post("/runs", {"package": "demo", "input": {"chunks": "four"}})
    assert response.status_code == 422
    error = error_of(response)
    assert error["details"]["field"] == "input.chunks" and "chunks" in error["message"]
    assert not Run.objects.exists()


@pytest.mark.parametrize("body, status, code, needle", [
    ({"package": "ghost", "input": {}}, 404, "unknown_package", "ghost"),
    ({"input": {}}, 422, "invalid_input", "package"),
    ({"package": 5}, 422, "invalid_input", "package"),
    ({"package": "t", "metadata": {"k": 1}}, 422, "invalid_input", "metadata"),
    ({"package": "t", "metadata": "k=v"}, 422, "invalid_input", "metadata"),
    ({"package": "t", "run_id": ""}, 422, "invalid_input", "run_id"),
    ({"package": "t", "run_id": "x" * 300}, 422, "invalid_input", "run_id"),
    ({"package": "t", "pacakge": "t"}, 422, "invalid_input", "pacakge"),
    ({"package": "t", "input": {"steps": [{"id": "a", "kind": "nope"}]}}, 422, "invalid_input", "nope"),
    ({"package": "t", "input": {"steps": [{"id": "a\x00", "kind": "noop"}]}}, 400, "bad_text", "NUL"),
    ({"package": "t", "input": {"k\x00": 1}}, 400, "bad_text", "NUL"),
    ([1, 2], 422, "invalid_input", ""),
])
def test_start__bad_bodies(as_operator: ApiClient, body: Any, status: int, code: str, needle: str) -> None:
    response = as_operator.post("/runs", body)
    assert response.status_code == status, response.content
    error = error_of(response)
    assert error["code"] == code and needle in error["message"] + str(error["details"])
    assert not Run.objects.exists()


@pytest.mark.parametrize("raw", ['{"package": ', "not json", '{"package": "t"', b"\xff\xfe"])
def test_start__malformed_json_is_400(as_operator: ApiClient, raw: Any) -> None:
    response = as_operator.post("/runs", raw=raw)
    assert response.status_code == 400
    assert error_of(response)["code"] == "malformed_json"


def test_start__lone_surrogate_is_400(as_operator: ApiClient) -> None:
    response = as_operator.post("/runs", raw='{"package": "t", "name": "\\ud800"}')
    assert response.status_code == 400 and error_of(response)["code"] == "bad_text"


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=10_000)
def test_start__huge_body_is_413(as_operator: ApiClient) -> None:
    response = as_operator.post("/runs", {"package": "t", "input": {"blob": "x" * 20_000}})
    assert response.status_code == 413 and error_of(response)["code"] == "payload_too_large"


def test_cancel__then_409(as_operator: ApiClient, active_run: str) -> None:
    response = as_operator.post(f"/runs/{active_run}/cancel")
    assert response.status_code == 200, response.content
    assert Run.objects.get(pk=active_run).state == "canceled"
    assert Event.objects.filter(run_id=active_run, kind="run_canceled", actor="otto").exists()
    again = as_operator.post(f"/runs/{active_run}/cancel")
    assert again.status_code == 409 and error_of(again)["code"] == "invalid_state"
    assert as_operator.post("/runs/ghost/cancel").status_code == 404


def test_retry__failed_step_then_409_for_one_that_is_not(as_operator: ApiClient, failed_run: str) -> None:
    response = as_operator.post(f"/runs/{failed_run}/steps/b/retry")
    assert response.status_code == 200
    assert Step.objects.get(run_id=failed_run, step_id="b").state == "ready"
    assert Run.objects.get(pk=failed_run).state == "running"
    not_failed = as_operator.post(f"/runs/{failed_run}/steps/a/retry")
    assert not_failed.status_code == 409 and error_of(not_failed)["code"] == "invalid_state"
    assert as_operator.post(f"/runs/{failed_run}/steps/zzz/retry").status_code == 404


def test_retry_failed__all_failed_steps_of_a_run(as_operator: ApiClient, failed_run: str) -> None:
    response = as_operator.post(f"/runs/{failed_run}/retry-failed")
    assert response.json() == {"done": 1, "skipped": []}
    assert Event.objects.filter(run_id=failed_run, kind="step_retried", actor="otto").count() == 1
    assert as_operator.post(f"/runs/{failed_run}/retry-failed").json() == {"done": 0, "skipped": []}
    assert as_operator.post("/runs/ghost/retry-failed").status_code == 404


def test_pause_and_resume_queue(as_operator: ApiClient, active_run: str) -> None:
    assert as_operator.post("/queues/default/pause").status_code == 200
    assert Queue.objects.get(pk="default").paused is True
    assert Event.objects.filter(kind="queue_paused", queue="default", actor="otto").exists()
    assert as_operator.post("/queues/default/resume").status_code == 200
    assert Queue.objects.get(pk="default").paused is False
    missing = as_operator.post("/queues/nope/pause")
    assert missing.status_code == 404 and "nope" in error_of(missing)["message"]


def test_actions__get_is_405(as_operator: ApiClient, failed_run: str) -> None:
    response = as_operator.get(f"/runs/{failed_run}/cancel")
    assert response.status_code == 405 and error_of(response)["details"]["allowed"] == ["POST"]


# -- bulk retry by filter, and retry with a patched input ----------------------------------------------
def _gate_failures(runtime: Any) -> None:
    from tests.conftest import drain, run_graph
    from tests.views.test_bulk import GRAPH_A, GRAPH_B

    run_graph(runtime, GRAPH_A)
    run_graph(runtime, GRAPH_B)
    drain(runtime)


def test_retry_failed_steps__dry_run_previews_then_the_bound_call_retries_that(as_operator: ApiClient,
                                                                               runtime: Any) -> None:
    from tests.conftest import drain, run_graph
    from tests.views.conftest import GATE

    _gate_failures(runtime)
    dry = as_operator.post("/steps/retry-failed", {"code": "gate_closed", "dry_run": True})
    assert dry.status_code == 200, dry.content
    preview = dry.json()
    assert (preview["selected"], preview["dependents"], preview["runs"], preview["done"]) == (3, 4, 2, 0)
    assert {s["step_id"] for s in preview["sample"]} == {"g1", "g2", "g"}
    assert not Event.objects.filter(kind="step_retried").exists()
    late = run_graph(runtime, [{"id": "late", "kind": "gate", "retry": 1}])
    drain(runtime)
    before = set(Step.objects.exclude(state="succeeded").values_list("id", flat=True))
    done = as_operator.post("/steps/retry-failed", {"code": "gate_closed", "as_of": preview["as_of"],
                                                    "max_id": preview["max_id"], "expected": preview["selected"]})
    assert done.status_code == 200, done.content
    assert (done.json()["done"], done.json()["batches"], done.json()["skipped"]) == (3, 1, [])
    assert Step.objects.get(run_id=late, step_id="late").state == "failed"  # failed after the preview
    assert set(Event.objects.filter(kind="step_retried").values_list("actor", flat=True)) == {"otto"}
    GATE["open"] = True
    drain(runtime)
    assert Step.objects.filter(id__in=before, state="succeeded").count() == preview["selected"] + preview["dependents"]


def test_retry_failed_steps__refusals(as_operator: ApiClient, as_viewer: ApiClient, runtime: Any) -> None:
    _gate_failures(runtime)
    assert as_viewer.post("/steps/retry-failed", {"code": "gate_closed"}).status_code == 403
    more = as_operator.post("/steps/retry-failed", {"code": "gate_closed", "expected": 2})
    assert more.status_code == 409 and "preview again" in error_of(more)["message"]
    bad = as_operator.post("/steps/retry-failed", {"since": "3y"})
    assert bad.status_code == 422 and "since" in error_of(bad)["message"]
    assert as_operator.post("/steps/retry-failed", {"code": "a\x00"}).status_code == 400
    assert as_operator.post("/steps/retry-failed", {"colour": "red"}).status_code == 422
    assert Step.objects.filter(state="failed").count() == 4


@pytest.fixture
def charge_failure(runtime: Any, monkeypatch: pytest.MonkeyPatch, demo_package: Any) -> Any:
    from tests.conftest import drain, run_graph
    from workflow import Registry
    from workflow.conf import reset_runtime
    from workflow.engine import registry as registry_module

    monkeypatch.setattr(registry_module, "registry", Registry([demo_package]))
    reset_runtime()
    run_id = run_graph(runtime, [{"id": "charge", "kind": "charge", "input": {"amount": 0}}])
    drain(runtime)
    yield run_id
    reset_runtime()


def test_retry_with_input__checked_against_the_type_then_kept(as_operator: ApiClient, charge_failure: str) -> None:
    url = f"/runs/{charge_failure}/steps/charge/retry-with-input"
    bad = as_operator.post(url, {"input": {"amount": "ten"}})
    assert bad.status_code == 422 and error_of(bad)["details"]["field"] == "input.amount"
    assert Step.objects.get(step_id="charge").input == {"amount": 0}
    assert as_operator.post(url, {}).status_code == 422  # input is required
    ok = as_operator.post(url, {"input": {"amount": 3}})
    assert ok.status_code == 200, ok.content
    step = Step.objects.get(step_id="charge")
    assert step.state == "ready" and step.input == {"amount": 3} and step.original_input["input"] == {"amount": 0}
    assert Event.objects.get(kind="step_input_edited").actor == "otto"
    assert as_operator.post(url, {"input": {"amount": 4}}).status_code == 409  # not failed any more
