"""Claims and successes are not stored as events (issue 17): the operator still sees them, read from attempt rows.

The run's and the step's event panels merge them in by time; the events console and the API serve
``step_claimed`` / ``step_succeeded`` from attempt rows when the kind filter asks for one.
"""

from __future__ import annotations

import re
from typing import Any

from django.test import Client
from django.urls import reverse

from tests.api.conftest import ApiClient
from tests.conftest import drain, run_graph
from workflow.api.tokens import create_token
from workflow.models import Event, Lease


def _kinds(html: str) -> list[str]:
    return re.findall(r'<span class="ev-kind">([^<]+)</span>', html)


def test_done_run__stores_no_routine_events_but_its_panels_show_them(runtime: Any, viewer_client: Client) -> None:
    run_id = run_graph(runtime, [{"id": "a", "kind": "noop"}, {"id": "b", "kind": "noop", "deps": ["a"]}])
    drain(runtime)
    assert not Event.objects.filter(kind__in=["step_claimed", "step_succeeded"]).exists()
    assert Event.objects.filter(run_id=run_id, kind="run_succeeded").exists()

    page = viewer_client.get(reverse("workflow:run", args=[run_id])).content.decode()
    section = page[page.index('id="run-events"'):]
    kinds = _kinds(section)
    # Newest first: the run's end, b's success and claim, a's success and claim.
    assert kinds[:1] == ["run_succeeded"] and kinds.count("step_succeeded") == 2 and kinds.count("step_claimed") == 2
    assert kinds.index("step_succeeded") < kinds.index("step_claimed")

    panel = viewer_client.get(reverse("workflow:step", args=[run_id, "a"]), HTTP_HX_REQUEST="true").content.decode()
    assert _kinds(panel) == ["step_succeeded", "step_claimed"]


def test_failed_then_retried_step__keeps_its_stored_events_beside_the_derived_ones(runtime: Any,
                                                                                   viewer_client: Client) -> None:
    run_id = run_graph(runtime, [{"id": "f", "kind": "flaky", "input": {"until": 2}}])
    drain(runtime)
    assert list(Lease.objects.filter(run_id=run_id).order_by("attempt").values_list("outcome", flat=True)) == [
        "retried", "succeeded"]
    panel = viewer_client.get(reverse("workflow:step", args=[run_id, "f"]), HTTP_HX_REQUEST="true").content.decode()
    kinds = _kinds(panel)
    assert "step_retrying" in kinds and kinds.count("step_claimed") == 2 and kinds.count("step_succeeded") == 1
    assert kinds[0] == "step_succeeded" and kinds[-1] == "step_claimed"


def test_events_console__serves_claims_and_successes_from_attempt_rows(runtime: Any, viewer_client: Client) -> None:
    run_id = run_graph(runtime, [{"id": "a", "kind": "noop"}, {"id": "b", "kind": "fail"}])
    drain(runtime)
    url = reverse("consoles:events")

    def rows(**params: str) -> list[tuple[str, str]]:
        html = viewer_client.get(url, params).content.decode()
        found = [re.search(r'data-kind="([^"]+)".*?(?:↳ ([^<]+)</a>|$)', tr, re.DOTALL) for tr in html.split("<tr")[1:]]
        return [(m[1], m[2] or "") for m in found if m]

    assert sorted(rows(kind="step_claimed")) == [("step_claimed", "a"), ("step_claimed", "b")]
    assert rows(kind="step_succeeded") == [("step_succeeded", "a")]
    assert rows(kind="step_succeeded", step="b") == []
    assert rows(kind="step_claimed", severity="error") == []
    assert rows(kind="step_claimed", run=run_id, step="b") == [("step_claimed", "b")]
    assert ("step_failed", "b") in rows()  # failures stay stored events
    lease = Lease.objects.get(step__step_id="a")
    tail = viewer_client.get(url, {"fragment": "new", "newer_than": lease.id - 1, "kind": "step_succeeded"},
                             HTTP_HX_REQUEST="true").content.decode()
    assert re.findall(r'data-id="(\d+)"', tail) == [str(lease.id)]


def test_api_events__serves_claims_and_successes_from_attempt_rows(runtime: Any, viewer: Any) -> None:
    run_id = run_graph(runtime, [{"id": "a", "kind": "noop"}])
    drain(runtime)
    api = ApiClient(create_token(viewer, name="t")[1])
    body = api.get("/events", {"kind": "step_succeeded"}).json()
    assert [(e["kind"], e["step_id"], e["run_id"]) for e in body["items"]] == [("step_succeeded", "a", run_id)]
    claimed = api.get("/events", {"kind": "step_claimed"}).json()["items"]
    assert [(e["kind"], e["severity"], e["payload"]) for e in claimed] == [("step_claimed", "debug", {"attempt": 1})]


def test_events_console__a_routine_kind_is_chosen_alone_and_pages_both_ways(runtime: Any, viewer_client: Client,
                                                                            viewer: Any) -> None:
    run_graph(runtime, [{"id": "a", "kind": "noop"}, {"id": "b", "kind": "noop", "deps": ["a"]}])
    drain(runtime)
    url = reverse("consoles:events")
    mixed = viewer_client.get(url, {"kind": ["step_claimed", "step_failed"]})
    assert mixed.status_code == 200  # a filter error is shown beside the field, as on every list page
    assert "step_claimed is read from the attempts" in mixed.content.decode()
    api = ApiClient(create_token(viewer, name="t")[1])
    refused = api.get("/events", {"kind": ["step_claimed", "step_failed"]})
    assert refused.status_code == 422 and "choose it alone" in refused.content.decode()

    def step_ids(**params: Any) -> list[str]:
        return [e["step_id"] for e in api.get("/events", {"kind": "step_claimed", **params}).json()["items"]]

    assert step_ids() == ["b", "a"]
    assert step_ids(sort="oldest") == ["a", "b"]
