"""What the pages show, how fast (query counts), and that user data is never live HTML."""

from __future__ import annotations

import html
import importlib
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.conftest import drain, run_graph
from tests.views.conftest import EVIL
from workflow import conf
from workflow.models import Artifact, Run, Step
from workflow.read.graph import EXPAND_PAGE, MAX_EXPANDED

runs_views = importlib.import_module("workflow.views.runs")

pytestmark = pytest.mark.django_db(transaction=True)


def count_queries(client: Client, url: str, **headers: Any) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, **headers)
    assert response.status_code in (200, 286), (url, response.status_code)
    return len(ctx.captured_queries)


def fan(n: int) -> list[dict[str, Any]]:
    return [{"id": "root", "kind": "noop"},
            *({"id": f"s{i:03d}", "kind": "noop", "deps": ["root"], "input": {"i": i}} for i in range(n)),
            {"id": "join", "kind": "noop", "deps": [f"s{i:03d}" for i in range(n)]}]


# -- query counts --------------------------------------------------------------------------------
def test_runs_page__query_count_does_not_grow(operator_client: Client, runtime: Any,
                                              django_assert_max_num_queries: Callable) -> None:
    for _ in range(5):
        run_graph(runtime, [{"id": "a", "kind": "noop"}, {"id": "b", "kind": "fail"}])
    url = reverse("workflow:runs")
    few = count_queries(operator_client, url)
    for _ in range(45):
        run_graph(runtime, [{"id": "a", "kind": "noop"}, {"id": "b", "kind": "fail"}])
    drain(runtime)
    with django_assert_max_num_queries(few):
        body = operator_client.get(url).content.decode()
    assert body.count('name="run" value=') == 50
    assert "2/2" in body  # progress done/total, from one grouped query


def test_run_page__query_count_does_not_grow(operator_client: Client, runtime: Any,
                                             django_assert_max_num_queries: Callable) -> None:
    small = run_graph(runtime, fan(5))
    big = run_graph(runtime, fan(50))
    drain(runtime)
    few = count_queries(operator_client, reverse("workflow:run", args=[small]) + "?step=join")
    with django_assert_max_num_queries(few):
        response = operator_client.get(reverse("workflow:run", args=[big]) + "?step=join")
    assert response.content.decode().count('class="node state-succeeded') == 52
    live = {"HTTP_HX_REQUEST": "true"}
    few = count_queries(operator_client, reverse("workflow:run", args=[small]) + "?fragment=live", **live)
    with django_assert_max_num_queries(few):
        operator_client.get(reverse("workflow:run", args=[big]) + "?fragment=live", **live)


def test_step_page__query_count_does_not_grow(operator_client: Client, runtime: Any,
                                              django_assert_max_num_queries: Callable) -> None:
    small = run_graph(runtime, fan(5))
    big = run_graph(runtime, fan(50))
    drain(runtime)
    for step in ("root", "join"):  # many dependents / many dependencies
        few = count_queries(operator_client, reverse("workflow:step", args=[small, step]))
        with django_assert_max_num_queries(few):
            body = operator_client.get(reverse("workflow:step", args=[big, step])).content.decode()
        assert "s049" in body


# -- security ------------------------------------------------------------------------------------
def test_step_output_and_artifacts__are_never_live_html(operator_client: Client, runtime: Any,
                                                        report_run: str) -> None:
    evil_run = run_graph(runtime, [{"id": "x", "kind": "noop", "input": {"html": EVIL}}], name=EVIL,
                         metadata={"note": EVIL})
    drain(runtime)
    page = Artifact.objects.get(run_id=report_run, name="page.html")
    urls = [
        reverse("workflow:runs"),
        reverse("workflow:run", args=[evil_run]) + "?step=x",
        reverse("workflow:step", args=[evil_run, "x"]),
        reverse("workflow:results", args=[evil_run]) + "?sel=x",
        reverse("workflow:run", args=[report_run]) + "?step=report",
        reverse("workflow:artifacts", args=[report_run]) + f"?sel={page.pk}",
        reverse("workflow:records"),
    ]
    for url in urls:
        body = operator_client.get(url).content.decode()
        assert "<script>alert" not in body, url
        assert "&lt;script&gt;alert(" in body, url


def test_download__is_an_attachment_with_nosniff(operator_client: Client, report_run: str) -> None:
    page = Artifact.objects.get(run_id=report_run, name="page.html")
    response = operator_client.get(reverse("workflow:download_artifact", args=[page.pk]))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="page.html"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Type"].startswith("text/html")
    assert "sandbox" in response["Content-Security-Policy"]
    body = b"".join(response.streaming_content)
    assert body == bytes(page.body) and int(response["Content-Length"]) == len(body)


def test_download__external_blob_streams_and_missing_blob_is_404(operator_client: Client, make_runtime: Any,
                                                                  monkeypatch: Any, transactional_db: Any) -> None:
    rt = make_runtime()
    monkeypatch.setattr(conf, "_runtime", rt)  # the download view reads the test's artifact store
    run_id = run_graph(rt, [{"id": "stored", "kind": "stored"}])
    drain(rt)
    csv = Artifact.objects.get(run_id=run_id, name="table.csv")
    assert not csv.is_inline
    response = operator_client.get(reverse("workflow:download_artifact", args=[csv.pk]))
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"word,count")
    assert response["Content-Length"] == str(csv.size)
    assert response["Content-Disposition"] == 'attachment; filename="table.csv"'
    rt.artifact_store.delete(csv.storage_key)
    missing = operator_client.get(reverse("workflow:download_artifact", args=[csv.pk]))
    assert missing.status_code == 404
    preview = operator_client.get(reverse("workflow:artifacts", args=[run_id]) + f"?sel={csv.pk}")
    assert "table.csv" in preview.content.decode() and "missing" in preview.content.decode()
    monkeypatch.setattr(conf, "_runtime", None)


# -- live refresh --------------------------------------------------------------------------------
def test_run_live_fragment__polls_while_active_and_stops_when_terminal(operator_client: Client, failed_run: str,
                                                                       active_run: str) -> None:
    hx = {"HTTP_HX_REQUEST": "true"}
    live = operator_client.get(reverse("workflow:run", args=[active_run]) + "?fragment=live", **hx)
    assert live.status_code == 200 and 'hx-trigger="every 3s"' in live.content.decode()
    done = operator_client.get(reverse("workflow:run", args=[failed_run]) + "?fragment=live", **hx)
    assert done.status_code == 286
    assert 'hx-trigger="every 3s"' not in done.content.decode()
    steps = operator_client.get(reverse("workflow:run", args=[failed_run]) + "?fragment=steps", **hx)
    assert steps.status_code == 286
    panel = operator_client.get(reverse("workflow:step", args=[failed_run, "b"]) + "?poll=1", **hx)
    assert panel.status_code == 286


def test_live_fragment__skips_the_graph_when_nothing_changed(operator_client: Client, active_run: str) -> None:
    hx = {"HTTP_HX_REQUEST": "true"}
    url = reverse("workflow:run", args=[active_run]) + "?fragment=live"
    first = operator_client.get(url, **hx).content.decode()
    assert "#graph-canvas" in first
    version = first.split("&amp;v=")[1].split('"')[0]
    again = operator_client.get(f"{url}&v={version}", **hx).content.decode()
    assert "#graph-canvas" not in again and 'id="run-live"' in again


def test_runs_table_fragment__polls_always_faster_while_a_run_is_active(operator_client: Client, failed_run: str,
                                                                        runtime: Any) -> None:
    hx = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "runs-table"}
    done = operator_client.get(reverse("workflow:runs") + "?state=failed", **hx)
    assert done.status_code == 200 and 'hx-trigger="every 10s"' in done.content.decode()
    run_graph(runtime, [{"id": "w", "kind": "noop"}])
    active = operator_client.get(reverse("workflow:runs") + "?package=t", **hx)
    body = active.content.decode()
    assert active.status_code == 200 and 'hx-trigger="every 3s' in body
    assert 'hx-get="/runs/?package=t"' in body  # the poll keeps the filters


# -- runs list -----------------------------------------------------------------------------------
def test_runs_table_fragment__pinned_poll_keeps_rows_and_counts_new_runs(operator_client: Client,
                                                                        runtime: Any) -> None:
    hx = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "runs-table"}
    url = reverse("workflow:runs")
    first = [run_graph(runtime, [{"id": "a", "kind": "noop"}], name=f"old-{i}") for i in range(3)]
    top = operator_client.get(url, **hx).context["top_cursor"]
    newer = [run_graph(runtime, [{"id": "a", "kind": "noop"}], name=f"new-{i}") for i in range(2)]
    pinned = operator_client.get(url, {"pin": top}, **hx)
    assert [r.id for r, _ in pinned.context["rows"]] == first[::-1]
    assert pinned.context["new_runs"] == 2 and "2 new runs: show" in pinned.content.decode()
    fresh = operator_client.get(url, **hx).context["rows"]
    assert [r.id for r, _ in fresh][:2] == newer[::-1]
    crafted = operator_client.get(url, {"pin": "garbage"}, **hx)  # a cursor this site did not make: a 400
    assert crafted.status_code == 400 and "page cursor" in crafted.content.decode()
    # A name filter is tried on the pinned page and on the newer runs it counts.
    pinned = operator_client.get(url, {"pin": top, "q": "new-1"}, **hx)
    assert pinned.context["rows"] == [] and pinned.context["new_runs"] == 1
    pinned = operator_client.get(url, {"pin": top, "q": "old-"}, **hx)
    assert [r.id for r, _ in pinned.context["rows"]] == first[::-1] and pinned.context["new_runs"] == 0


def test_runs_page__keyset_pages_newest_first(operator_client: Client, runtime: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(runs_views, "RUNS_PER_PAGE", 3)
    ids = [run_graph(runtime, [{"id": "a", "kind": "noop"}], run_id=f"run-{i:02d}") for i in range(7)]
    newest_first = list(Run.objects.order_by("-created_at", "-id").values_list("id", flat=True))
    assert sorted(newest_first) == sorted(ids)
    seen: list[str] = []
    response = operator_client.get(reverse("workflow:runs"))
    pages = []
    while True:
        page = response.context["page"]
        pages.append(page)
        seen += [r.id for r in page.rows]
        if not page.older:
            break
        with CaptureQueriesContext(connection) as later_page:
            response = operator_client.get(reverse("workflow:runs") + f"?after={page.older}")
        # Keyset paging: a later page is found from the cursor, never by skipping rows with OFFSET.
        run_queries = [q["sql"] for q in later_page.captured_queries if '"workflow_run"' in q["sql"]]
        assert run_queries and not any("OFFSET" in sql.upper() for sql in run_queries), run_queries
    assert seen == newest_first
    assert [len(p.rows) for p in pages] == [3, 3, 1]
    back = operator_client.get(reverse("workflow:runs") + f"?before={pages[1].newer}").context["page"]
    assert [r.id for r in back.rows] == newest_first[:3] and back.newer is None


def test_runs_page__filters(operator_client: Client, runtime: Any, failed_run: str) -> None:
    tagged = run_graph(runtime, [{"id": "a", "kind": "noop"}], name="Invoice batch", metadata={"customer": "acme"})
    url = reverse("workflow:runs")

    def shown(query: str) -> set[str]:
        return {r.id for r in operator_client.get(url + query).context["page"].rows}

    assert shown("?state=failed") == {failed_run}
    assert shown("?meta=customer%3Dacme") == {tagged}
    assert shown("?q=invoice") == {tagged}
    assert shown(f"?q={failed_run[:10]}") >= {failed_run}
    assert shown("?package=t") == {tagged, failed_run}
    assert shown("?package=other") == set()
    assert shown("?created_after=2000-01-01T00%3A00") == {tagged, failed_run}
    assert shown("?created_before=2000-01-01T00%3A00") == set()
    bad = operator_client.get(url + "?created_after=yesterday&state=weird")
    body = bad.content.decode()
    assert bad.status_code == 200 and "Enter a real date and time" in body
    assert 'id="f-after-error"' in body and "Select a valid choice" in body


# -- run page ------------------------------------------------------------------------------------
def test_run_page__blocked_step_explains_which_dependency_failed(operator_client: Client, failed_run: str) -> None:
    body = operator_client.get(reverse("workflow:run", args=[failed_run]) + "?step=c").content.decode()
    assert "Blocked: required dependency &#x27;b&#x27; failed" in body
    assert 'class="node state-pending blocked' in body


def test_run_page__large_run_groups_the_graph_and_expands_a_group(operator_client: Client, runtime: Any) -> None:
    run_id = run_graph(runtime, fan(240))
    url = reverse("workflow:run", args=[run_id])
    body = operator_client.get(url).content.decode()
    assert "noop ×240" in body
    assert "Large groups of sibling steps are shown as one box" in body
    assert body.count('data-step-id="s') == 0
    assert 'data-step-id="root"' in body and 'data-step-id="join"' in body  # not lumped with the fan-out
    key = html.unescape(re.search(r'data-group-key="([^"]+)"', body).group(1))
    expanded = operator_client.get(url, {"expand": key}).content.decode()
    # One page of the group is shown; the other members wait behind a "more" box that pages on.
    assert expanded.count('data-step-id="s') == EXPAND_PAGE
    assert "+40 more noop" in expanded
    assert f"expand={quote(key)}%401" in expanded
    second = operator_client.get(url, {"expand": f"{key}@1"}).content.decode()
    assert 0 < second.count('data-step-id="s') <= EXPAND_PAGE


def test_run_page__expand_parameter_stays_bounded_in_the_live_url(operator_client: Client, runtime: Any) -> None:
    run_id = run_graph(runtime, fan(240))
    url = reverse("workflow:run", args=[run_id])
    key = html.unescape(re.search(r'data-group-key="([^"]+)"', operator_client.get(url).content.decode()).group(1))
    many = ",".join([f"g{i}::noop" for i in range(50)] + ["x" * 5000, key])
    response = operator_client.get(url, {"expand": many})
    live = response.context["live_url"]
    assert live.count("%3A%3A") <= MAX_EXPANDED and "xxxxx" not in live
    assert response.content.decode().count('data-step-id="s') == EXPAND_PAGE


def test_run_page__jump_to_a_step_inside_a_collapsed_group_opens_its_page(operator_client: Client,
                                                                           runtime: Any) -> None:
    run_id = run_graph(runtime, fan(240))
    url = reverse("workflow:run", args=[run_id])
    last = sorted(s.step_id for s in Step.objects.filter(run_id=run_id, kind="noop"))[-1]
    body = operator_client.get(url, {"step": last}).content.decode()
    assert f'data-step-id="{last}"' in body and 'aria-current="true"' in body
    assert f'data-focus="{last}"' in body


def test_run_page__step_table_search_sort_and_pages(operator_client: Client, runtime: Any) -> None:
    run_id = run_graph(runtime, fan(120))
    drain(runtime)
    url = reverse("workflow:run", args=[run_id])
    hx = {"HTTP_HX_REQUEST": "true"}
    found = operator_client.get(url, {"fragment": "steps", "sq": "s11"}, **hx).context["step_page"].rows
    assert sorted(s.step_id for s in found) == [f"s{i}" for i in range(110, 120)]
    first = operator_client.get(url, {"fragment": "steps"}, **hx).context
    assert len(first["step_page"].rows) == 100 and first["step_next"]
    nxt = operator_client.get(first["step_next"]["hx"], **hx).context["step_page"].rows
    assert len(nxt) == 22
    assert not {s.step_id for s in nxt} & {s.step_id for s in first["step_page"].rows}
    desc = operator_client.get(url, {"fragment": "steps", "sort": "id", "dir": "desc"}, **hx).context
    assert desc["step_page"].rows[0].step_id == "s119"
    for sort in ("kind", "state", "attempts", "duration"):
        assert operator_client.get(url, {"fragment": "steps", "sort": sort}, **hx).status_code == 286  # run done


def test_step_ids_with_slashes_and_odd_characters_route(operator_client: Client, runtime: Any) -> None:
    odd = "load/eu-west?x=1#frag ~2F"
    run_id = run_graph(runtime, [{"id": odd, "kind": "fail"}], run_id="acme/2026#1")
    drain(runtime)
    url = reverse("workflow:step", args=[run_id, odd])
    response = operator_client.get(url)
    assert response.status_code == 200 and response.context["step"].step_id == odd
    retry = operator_client.post(reverse("workflow:retry_step", args=[run_id, odd]))
    assert retry.status_code == 302
    assert operator_client.get(reverse("workflow:run", args=[run_id])).status_code == 200


# -- browsers ------------------------------------------------------------------------------------
def test_artifact_preview__csv_json_html_image(operator_client: Client, report_run: str) -> None:
    url = reverse("workflow:artifacts", args=[report_run])
    hx = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "preview-pane"}
    by_name = {a.name: a.pk for a in Artifact.objects.filter(run_id=report_run)}
    csv = operator_client.get(url, {"sel": by_name["table.csv"]}, **hx).content.decode()
    assert "<th>word</th>" in csv and "<td>&lt;b&gt;beta&lt;/b&gt;</td>" in csv
    js = operator_client.get(url, {"sel": by_name["summary.json"]}, **hx).content.decode()
    assert "&quot;distinct&quot;: 2," in js
    html = operator_client.get(url, {"sel": by_name["page.html"]}, **hx).content.decode()
    assert "shown as source" in html and "&lt;h1&gt;hi&lt;/h1&gt;" in html
    img = operator_client.get(url, {"sel": by_name["pixel.png"]}, **hx).content.decode()
    assert f'<img src="{reverse("workflow:download_artifact", args=[by_name["pixel.png"]])}"' in img
    full = operator_client.get(url, {"type": "text/csv"}).context["page"].rows
    assert [a.name for a in full] == ["table.csv"]


def test_results_browser__filters_and_preview(operator_client: Client, failed_run: str) -> None:
    url = reverse("workflow:results", args=[failed_run])
    rows = operator_client.get(url, {"state": "failed"}).context["page"].rows
    assert [s.step_id for s in rows] == ["b"]
    preview = operator_client.get(url, {"sel": "a"}, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="preview-pane")
    assert "&quot;n&quot;: 1" in preview.content.decode()


def test_records_page__filters_and_links_to_the_writer(operator_client: Client, report_run: str) -> None:
    body = operator_client.get(reverse("workflow:records"), {"collection": "reports", "q": "rep"}).content.decode()
    assert "reports" in body and f"/runs/{report_run}/?step=report" in body
    assert operator_client.get(reverse("workflow:records"), {"q": "zzz"}).context["page"].rows == []


def test_overview__counts_and_failures_by_code(operator_client: Client, failed_run: str) -> None:
    body = operator_client.get(reverse("workflow:overview")).content.decode()
    assert "boom" in body and "Engine overview" in body


# -- search --------------------------------------------------------------------------------------
def test_search__goes_straight_to_a_run_a_step_or_an_error_code(operator_client: Client, failed_run: str,
                                                                runtime: Any) -> None:
    url = reverse("workflow:search")
    assert operator_client.get(url, {"q": failed_run})["Location"] == reverse("workflow:run", args=[failed_run])
    named = run_graph(runtime, [{"id": "only-here", "kind": "noop"}], name="Quarterly close")
    assert operator_client.get(url, {"q": "quarterly"})["Location"] == reverse("workflow:run", args=[named])
    assert operator_client.get(url, {"q": "only-here"})["Location"].endswith("?step=only-here")
    assert "code=boom" in operator_client.get(url, {"q": "boom"})["Location"]
    nothing = operator_client.get(url, {"q": "<script>nothing</script>"})
    assert nothing.status_code == 200 and "Nothing matches" in nothing.content.decode()
    assert "<script>nothing" not in nothing.content.decode()
    assert operator_client.get(url, {"q": "x" * 5000}).status_code == 200


def test_search__needs_a_login(client: Client) -> None:
    assert client.get(reverse("workflow:search"), {"q": "x"}).status_code == 302
