"""Read endpoints: bodies, filters, keyset paging, downloads with ranges, and bad input of every kind."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, get_args

import pytest
from django.utils import timezone

from tests.api.conftest import ApiClient, error_of
from tests.conftest import drain, run_graph
from workflow.api import schemas
from workflow.engine.values import RunState, StepState
from workflow.models import Artifact, Event, Run
from workflow.read.pages import encode_cursor


def test_enums__match_the_engine_states() -> None:
    assert list(get_args(schemas.RunStateName)) == [s.value for s in RunState]
    assert list(get_args(schemas.StepStateName)) == [s.value for s in StepState]
    assert set(get_args(schemas.SeverityName)) == set(Event.Severity.values)


def test_runs__list_with_progress(as_viewer: ApiClient, failed_run: str, done_run: str) -> None:
    body = as_viewer.get("/runs").json()
    by_id = {r["id"]: r for r in body["items"]}
    assert [r["id"] for r in body["items"]] == [done_run, failed_run]  # newest first
    assert by_id[failed_run]["state"] == "failed"
    assert by_id[failed_run]["progress"]["counts"] == {"succeeded": 1, "failed": 1, "pending": 1}
    assert by_id[done_run]["progress"] == {"counts": {"succeeded": 2}, "total": 2, "done": 2, "percent": 100}
    assert body["next"] is None and body["previous"] is None


def test_runs__filters(as_viewer: ApiClient, runtime: Any) -> None:
    a = runtime.start_run("t", {"steps": [{"id": "s", "kind": "noop"}]}, run_id="alpha-1", name="Alpha",
                          metadata={"team": "red"}).id
    b = runtime.start_run("t", {"steps": [{"id": "s", "kind": "noop"}]}, run_id="beta-1", metadata={"team": "blue"}).id
    ids = lambda **p: [r["id"] for r in as_viewer.get("/runs", p).json()["items"]]  # noqa: E731
    assert ids(meta="team=red") == [a]
    assert ids(q="beta") == [b]
    assert ids(q="alph") == [a]
    assert ids(state="pending") == [b, a]
    assert ids(state="failed") == []
    assert ids(package="t") == [b, a]
    assert ids(package="other") == []
    later = (timezone.now() + timedelta(hours=1)).isoformat()
    assert ids(created_after=later) == []
    assert ids(created_before=later) == [b, a]


def test_runs__keyset_paging_forward_and_back(as_viewer: ApiClient, runtime: Any) -> None:
    made = [runtime.start_run("t", {"steps": [{"id": "s", "kind": "noop"}]}, run_id=f"r{i}").id for i in range(5)]
    newest_first = made[::-1]
    first = as_viewer.get("/runs", {"limit": 2}).json()
    second = as_viewer.get("/runs", {"limit": 2, "after": first["next"]}).json()
    third = as_viewer.get("/runs", {"limit": 2, "after": second["next"]}).json()
    seen = [r["id"] for page in (first, second, third) for r in page["items"]]
    assert seen == newest_first and third["next"] is None
    back = as_viewer.get("/runs", {"limit": 2, "before": second["previous"]}).json()
    assert [r["id"] for r in back["items"]] == newest_first[:2]


@pytest.mark.parametrize("params, status, code", [
    ({"after": "not-a-cursor"}, 400, "bad_cursor"),
    ({"before": encode_cursor("x")}, 400, "bad_cursor"),  # a real cursor, of the wrong size
    ({"after": encode_cursor("not a date", "id")}, 400, "bad_cursor"),
    ({"after": encode_cursor("2026-13-45T00:00:00", "id")}, 400, "bad_cursor"),
    ({"after": encode_cursor(10**30, "id")}, 400, "bad_cursor"),
    ({"after": encode_cursor({"a": 1}, "id")}, 400, "bad_cursor"),
    ({"after": "a" * 3000}, 422, "invalid_input"),
    ({"state": "nope"}, 422, "invalid_input"),
    ({"created_after": "yesterday"}, 422, "invalid_input"),
    ({"created_before": "2026-02-30T10:00"}, 422, "invalid_input"),
    ({"meta": "no-equals"}, 422, "invalid_input"),
    ({"meta": "a__contains=x"}, 422, "invalid_input"),
    ({"limit": 0}, 422, "invalid_input"),
    ({"limit": 10**40}, 422, "invalid_input"),
    ({"limit": "many"}, 422, "invalid_input"),
    ({"q": "nul\x00byte"}, 400, "bad_request"),
    ({"package": "\x00"}, 400, "bad_request"),
])
def test_runs__bad_input_is_4xx(as_viewer: ApiClient, done_run: str, params: dict, status: int, code: str) -> None:
    response = as_viewer.get("/runs", params)
    assert response.status_code == status, response.content
    assert error_of(response)["code"] == code


def test_run__detail_and_404(as_viewer: ApiClient, failed_run: str) -> None:
    body = as_viewer.get(f"/runs/{failed_run}").json()
    assert body["id"] == failed_run and body["package"] == "t" and body["state"] == "failed"
    assert body["input"]["steps"][0]["id"] == "a"
    assert body["progress"]["total"] == 3
    response = as_viewer.get("/runs/no-such-run")
    assert response.status_code == 404 and "no-such-run" in error_of(response)["message"]


def test_run__ids_with_slashes_use_the_escape(as_viewer: ApiClient, runtime: Any) -> None:
    runtime.start_run("t", {"steps": [{"id": "s/1", "kind": "noop"}]}, run_id="team/a~b")
    assert as_viewer.get("/runs/team~2Fa~7Eb").json()["id"] == "team/a~b"
    assert as_viewer.get("/runs/team~2Fa~7Eb/steps/s~2F1").json()["step_id"] == "s/1"


def test_steps__list_sort_and_paging(as_viewer: ApiClient, failed_run: str) -> None:
    body = as_viewer.get(f"/runs/{failed_run}/steps").json()
    assert [(s["step_id"], s["state"]) for s in body["items"]] == [("a", "succeeded"), ("b", "failed"), ("c", "pending")]
    assert body["items"][1]["error_code"] == "boom"
    page = as_viewer.get(f"/runs/{failed_run}/steps", {"limit": 1, "sort": "kind"}).json()
    nxt = as_viewer.get(f"/runs/{failed_run}/steps", {"limit": 1, "sort": "kind", "after": page["next"]}).json()
    assert page["items"][0]["step_id"] != nxt["items"][0]["step_id"]
    assert [s["step_id"] for s in as_viewer.get(f"/runs/{failed_run}/steps", {"state": "failed"}).json()["items"]] == ["b"]
    assert as_viewer.get(f"/runs/{failed_run}/steps", {"sort": "nope"}).status_code == 422
    assert as_viewer.get(f"/runs/{failed_run}/steps", {"after": encode_cursor(1, 2)}).status_code == 400
    assert as_viewer.get("/runs/missing/steps").status_code == 404


def test_step__detail_error_dependencies_and_why_it_waits(as_viewer: ApiClient, failed_run: str) -> None:
    b = as_viewer.get(f"/runs/{failed_run}/steps/b").json()
    assert b["error"]["code"] == "boom" and b["error"]["message"]
    assert [d["step_id"] for d in b["dependencies"]] == ["a"] and b["dependents"][0]["step_id"] == "c"
    c = as_viewer.get(f"/runs/{failed_run}/steps/c").json()
    assert c["blocked_by"] == ["b"]
    assert any("Blocked" in reason for reason in c["waiting_reasons"])
    assert as_viewer.get(f"/runs/{failed_run}/steps/zzz").status_code == 404


def test_attempts__with_log_lines(as_viewer: ApiClient, runtime: Any) -> None:
    run_id = run_graph(runtime, [{"id": "g", "kind": "gate"}])
    drain(runtime)
    attempts = as_viewer.get(f"/runs/{run_id}/steps/g/attempts").json()
    assert len(attempts) == 1
    assert attempts[0]["outcome"] == "failed" and attempts[0]["error_code"] == "gate_closed"
    assert "checking the gate (attempt 1)" in attempts[0]["log"]


def test_results(as_viewer: ApiClient, failed_run: str) -> None:
    items = as_viewer.get(f"/runs/{failed_run}/results").json()["items"]
    by_id = {i["step_id"]: i for i in items}
    assert by_id["a"]["state"] == "succeeded" and by_id["b"]["error"]["code"] == "boom"
    assert as_viewer.get(f"/runs/{failed_run}/results", {"state": "failed"}).json()["items"][0]["step_id"] == "b"


def test_artifacts__list_and_download(as_viewer: ApiClient, report_run: str) -> None:
    items = as_viewer.get(f"/runs/{report_run}/artifacts").json()["items"]
    assert {i["name"] for i in items} == {"table.csv", "summary.json", "page.html", "pixel.png"}
    page = next(i for i in items if i["name"] == "page.html")
    response = as_viewer.client.get(page["download_url"], headers=as_viewer.headers)
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert body.startswith(b"<h1>hi</h1>") and len(body) == page["size"]
    assert response["Content-Disposition"].startswith("attachment")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Accept-Ranges"] == "bytes"


def test_artifacts__range_requests(as_viewer: ApiClient, report_run: str) -> None:
    artifact = Artifact.objects.get(run_id=report_run, name="table.csv")
    full = b"word,count\nalpha,3\n<b>beta</b>,2\n"
    url = f"/artifacts/{artifact.id}/download"

    def fetch(rng: str) -> Any:
        return as_viewer.get(url, **{"Range": rng})

    part = fetch("bytes=0-3")
    assert part.status_code == 206 and b"".join(part.streaming_content) == full[:4]
    assert part["Content-Range"] == f"bytes 0-3/{len(full)}" and part["Content-Length"] == "4"
    assert part["Content-Disposition"].startswith("attachment")
    tail = fetch("bytes=-5")
    assert b"".join(tail.streaming_content) == full[-5:]
    open_end = fetch("bytes=5-")
    assert b"".join(open_end.streaming_content) == full[5:]
    beyond = fetch(f"bytes={len(full)}-")
    assert beyond.status_code == 416 and error_of(beyond)["code"] == "range_not_satisfiable"
    ignored = fetch("bytes=0-1,4-5")  # several ranges: served whole, as RFC 9110 allows
    assert ignored.status_code == 200
    assert as_viewer.get("/artifacts/nope/download").status_code == 404


def test_records__list_and_one(as_viewer: ApiClient, report_run: str) -> None:
    items = as_viewer.get("/records", {"collection": "reports"}).json()["items"]
    assert [(r["collection"], r["key"]) for r in items] == [("reports", "report")]
    assert items[0]["data"]["rows"] == 2 and items[0]["run_id"] == report_run
    one = as_viewer.get("/records/reports/report").json()
    assert one["data"]["note"] == "<script>alert('xss')</script>"  # data, as JSON; nothing renders it
    assert as_viewer.get("/records/reports/missing").status_code == 404


def test_queues(as_viewer: ApiClient, active_run: str) -> None:
    queues = {q["name"]: q for q in as_viewer.get("/queues").json()}
    default = queues["default"]
    assert default["ready"] == 1 and default["running"] == 0 and default["paused"] is False
    assert default["oldest_ready_age_seconds"] is not None and default["oldest_ready_age_seconds"] >= 0
    assert default["stall_reasons"]  # no live worker serves it in this test


def test_events__filters_and_paging(as_viewer: ApiClient, failed_run: str) -> None:
    body = as_viewer.get("/events", {"run": failed_run, "limit": 2}).json()
    assert len(body["items"]) == 2 and body["next"]
    ids = [e["id"] for e in body["items"]]
    assert ids == sorted(ids, reverse=True)
    rest = as_viewer.get("/events", {"run": failed_run, "limit": 200, "after": body["next"]}).json()
    assert all(e["id"] < ids[-1] for e in rest["items"])
    failed = as_viewer.get("/events", {"kind": "step_failed"}).json()["items"]
    assert [e["step_id"] for e in failed] == ["b"]
    assert as_viewer.get("/events", {"severity": "loud"}).status_code == 422
    assert as_viewer.get("/events", {"range": "1y"}).status_code == 422
    assert as_viewer.get("/events", {"since": "soon"}).status_code == 422
    assert as_viewer.get("/events", {"range": "1h"}).status_code == 200
    assert as_viewer.get("/events", {"after": encode_cursor("x")}).status_code == 400


def test_packages__with_input_schema(as_viewer: ApiClient) -> None:
    packages = {p["name"]: p for p in as_viewer.get("/packages").json()}
    demo = packages["demo"]
    assert demo["input_schema"]["type"] == "object" and "text" in demo["input_schema"]["properties"]
    assert demo["executors"]


def test_engine_status(as_viewer: ApiClient, done_run: str) -> None:
    body = as_viewer.get("/engine").json()
    assert body["database_vendor"] in ("sqlite", "postgresql")
    assert body["migrations_applied"] > 0 and body["latest_workflow_migration"]
    assert {t["table"] for t in body["tables"]} >= {"workflow_run", "workflow_step"}
    assert next(t for t in body["tables"] if t["table"] == "workflow_run")["count"] == Run.objects.count()


def test_unknown_path_and_method(as_viewer: ApiClient) -> None:
    missing = as_viewer.get("/nothing/here")
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    wrong = as_viewer.client.delete("/api/v1/runs", headers=as_viewer.headers)
    assert wrong.status_code == 405 and error_of(wrong)["code"] == "method_not_allowed"
    assert "GET" in wrong["Allow"]


def test_openapi_document_and_docs_page(as_viewer: ApiClient, viewer: Any) -> None:
    doc = json.loads(as_viewer.client.get("/api/v1/openapi.json").content)
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/runs" in doc["paths"] and "post" in doc["paths"]["/api/v1/runs"]
    assert as_viewer.client.get("/api/v1/docs/").status_code == 302  # login first
    as_viewer.client.force_login(viewer)
    page = as_viewer.client.get("/api/v1/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/api/v1/runs/{run_id}/steps/{step_id}/retry" in html and "<script" not in html and "cdn" not in html


def test_events__a_number_for_since_or_until_is_refused_naming_it(as_viewer: ApiClient, failed_run: str) -> None:
    """Found by schemathesis: ``until=0.5`` was read as half a second after 1970 (the schema says ISO 8601)."""
    for name in ("since", "until"):
        response = as_viewer.get("/events", {name: "0.5"})
        assert response.status_code == 422, response.content
        assert name in response.content.decode()
    assert as_viewer.get("/events", {"until": "2100-01-01T00:00:00Z", "run": failed_run}).json()["items"]
