"""The dashboard at scale and under pressure, in real Chromium: live typing, big graphs, failures first."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, shoot_all
from tests.conftest import drain, run_graph
from workflow.models import Run, Step

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TYPED = "transform-0042-alpha-beta-gamma-delta"  # 37 keys at 100 ms: longer than a 3 s live refresh
TEXT_INPUTS = "main input:visible:is([type=search], [type=text], :not([type]))"



def live_run(runtime: Any) -> str:
    run_id = run_graph(runtime, [
        {"id": "first", "kind": "noop"},
        *({"id": f"part-{i}", "kind": "noop", "deps": ["first"]} for i in range(6)),
        {"id": "join", "kind": "noop", "deps": [f"part-{i}" for i in range(6)]},
        {"id": "wobbly", "kind": "flaky", "input": {"until": 9}, "retry": 9},
    ], name="Live import")
    runtime.run_once()
    assert Run.objects.get(pk=run_id).is_active
    return run_id


def type_into_every_input(page: Any, polls: list[str]) -> int:
    """Type slowly into each text input; each keeps its value and focus through live refreshes."""
    inputs = page.locator(TEXT_INPUTS)
    count = inputs.count()
    assert count, "a live page with no text input to try"
    for i in range(count):
        box = page.locator(TEXT_INPUTS).nth(i)
        ident = box.get_attribute("id")
        box.click()
        box.fill("")
        before = len(polls)
        box.press_sequentially(TYPED, delay=100)
        assert len(polls) > before, f"no live refresh happened while typing into #{ident}"
        page.wait_for_timeout(600)  # a search box's own filter request (400 ms debounce) lands too
        expect(page.locator(f"#{ident}")).to_have_value(TYPED)
        assert page.evaluate("document.activeElement && document.activeElement.id") == ident
        page.keyboard.press("Escape")
        page.locator(f"#{ident}").fill("")
    return count


def test_typing__survives_live_refresh_on_every_live_page(page: Any, live_server: Any, runtime: Any,
                                                          operator_user: Any) -> None:
    run_id = live_run(runtime)
    polls: list[str] = []
    page.on("requestfinished", lambda req: polls.append(req.url) if req.headers.get("hx-request") else None)
    login(page, live_server.url)

    page.goto(f"{live_server.url}/runs/{run_id}/")
    expect(page.locator("#run-live .badge").first).to_have_text("running")
    # The step panel of a retrying step refreshes too: a log the operator folded stays folded.
    page.locator('svg.workflow-graph a.node[data-step-id="wobbly"]').click()
    log = page.locator("#step-panel details.log").first
    expect(log).to_be_visible()
    log.locator("summary").click()
    assert log.evaluate("d => d.open") is False
    assert type_into_every_input(page, polls) == 2  # step search and jump-to-step
    assert log.evaluate("d => d.open") is False, "a live refresh reopened a log the operator closed"
    # The step search did filter once typing paused; the rows region was replaced, not the box.
    expect(page.locator("#step-rows")).to_be_visible()

    for path in ("/runs/", "/ops/events/"):
        page.goto(f"{live_server.url}{path}")
        assert type_into_every_input(page, polls) >= 2


# Two live regions swapped within htmx's settle delay: the second records while the first's new
# content still shows the server's default (a log open), before the first restores.
_OVERLAPPING_SWAPS = """d => {
    const fire = (name) => document.body.dispatchEvent(new CustomEvent(name, {bubbles: true}));
    fire("htmx:beforeSwap");                       // swap 1 records: the log is closed
    const fresh = d.cloneNode(true);
    fresh.open = true;                             // swap 1's content: the server renders it open
    fresh.classList.add("htmx-added");             // htmx marks it until it settles
    d.replaceWith(fresh);
    fire("htmx:beforeSwap");                       // swap 2 records before swap 1 settled
    fresh.classList.remove("htmx-added");
    fire("htmx:afterSettle");                      // swap 1 restores
    return fresh.open;
}"""


def test_folded_log__stays_folded_when_two_swaps_overlap(page: Any, live_server: Any, runtime: Any,
                                                         operator_user: Any) -> None:
    """Seen in CI: a refresh reopened a log the operator had folded, when another region's swap
    recorded the panel's state between the first swap and its restore."""
    run_id = live_run(runtime)
    login(page, live_server.url)
    page.goto(f"{live_server.url}/runs/{run_id}/")
    page.locator('svg.workflow-graph a.node[data-step-id="wobbly"]').click()
    log = page.locator("#step-panel details.log").first
    expect(log).to_be_visible()
    log.locator("summary").click()
    assert log.evaluate("d => d.open") is False
    assert log.evaluate(_OVERLAPPING_SWAPS) is False


def big_fan_out(runtime: Any, n: int, *, failing: int | None = None) -> str:
    steps: list[dict] = [{"id": "extract", "kind": "noop"}]
    steps += [{"id": f"transform-{i:05d}", "kind": "gate" if i == failing else "noop", "deps": ["extract"]}
              for i in range(n)]
    steps += [{"id": "load", "kind": "noop", "deps": [f"transform-{i:05d}" for i in range(n)]},
              {"id": "report", "kind": "noop", "deps": ["load"]}]
    return run_graph(runtime, steps, name=f"Fan-out of {n}")


def node_on_screen(page: Any, selector: str) -> bool:
    return page.evaluate(
        """sel => {
            const node = document.querySelector(sel), canvas = document.querySelector('#graph-canvas');
            if (!node) return false;
            const a = node.getBoundingClientRect(), b = canvas.getBoundingClientRect();
            return a.width > 20 && a.left >= b.left - 1 && a.right <= b.right + 1
                && a.top >= b.top - 1 && a.bottom <= b.bottom + 1;
        }""", selector)


def scale(page: Any) -> float:
    return float(page.locator("[data-graph-view]").get_attribute("data-scale"))


def test_graph__ten_thousand_steps_readable_at_first_sight_zoom_pan_and_jump(page: Any, live_server: Any,
                                                                            runtime: Any, operator_user: Any) -> None:
    started = time.monotonic()
    run_id = big_fan_out(runtime, 10_000)
    assert time.monotonic() - started < 60
    login(page, live_server.url)
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(f"{live_server.url}/runs/{run_id}/")
    graph = page.locator("svg.workflow-graph")
    # Grouped: the fan-out is one box; the whole pipeline fits, readable, roots on screen.
    expect(graph.locator("a.node.group")).to_contain_text("noop ×10,000")
    assert node_on_screen(page, 'a.node[data-step-id="extract"]')
    assert node_on_screen(page, 'a.node[data-step-id="report"]')
    assert scale(page) >= 0.55
    shoot_all(page, "graph-10000")

    # Keyboard: + zooms in, 0 fits, arrows pan.
    canvas = page.locator("#graph-canvas")
    canvas.focus()
    first = scale(page)
    page.keyboard.press("+")
    assert scale(page) > first
    view = graph.get_attribute("viewBox")
    page.keyboard.press("ArrowRight")
    assert graph.get_attribute("viewBox") != view
    page.keyboard.press("0")
    assert scale(page) == pytest.approx(first, rel=0.01)
    # Mouse: the wheel zooms at the cursor, a drag pans and does not open the node it ends on.
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -400)
    assert scale(page) > first
    view = graph.get_attribute("viewBox")
    page.mouse.down()
    page.mouse.move(box["x"] + 100, box["y"] + 100, steps=5)
    page.mouse.up()
    assert graph.get_attribute("viewBox") != view
    assert "step=" not in page.url
    # Zoomed in past the canvas, the minimap shows where the view is; clicking it moves there.
    minimap = page.locator("[data-graph-minimap]")
    expect(minimap).to_be_visible()
    view = graph.get_attribute("viewBox")
    minimap.click(position={"x": 10, "y": 10})
    assert graph.get_attribute("viewBox") != view
    # It covers the canvas's lower-right corner, so the operator can put it away (and back).
    toggle = page.get_by_role("button", name="Map")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    toggle.click()
    expect(minimap).to_be_hidden()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    toggle.click()
    expect(minimap).to_be_visible()

    # Jump to a step hidden in the group: its page of the group opens, centred and selected.
    page.get_by_label("Step id").fill("transform-07777")
    page.get_by_label("Step id").press("Enter")
    page.wait_for_url(re.compile(r"step=transform-07777"))
    node = 'a.node[data-step-id="transform-07777"]'
    expect(page.locator(node)).to_have_attribute("aria-current", "true")
    assert node_on_screen(page, node)
    expect(page.locator("#step-panel h2")).to_have_text("transform-07777")
    # A group page is bounded: 200 members, the rest behind "more" boxes.
    assert page.locator("svg.workflow-graph a.node[data-step-id]").count() <= 204
    shoot_all(page, "graph-10000-jump")


def test_graph__touch_pinch_zooms(page: Any, live_server: Any, runtime: Any, operator_user: Any,
                                  browser: Any) -> None:
    run_id = big_fan_out(runtime, 30)
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    phone = context.new_page()
    login(phone, live_server.url)
    phone.goto(f"{live_server.url}/runs/{run_id}/")
    expect(phone.locator("svg.workflow-graph")).to_be_visible()
    before = scale(phone)
    # Two fingers moving apart (synthesised pointer events, as a touch screen sends them).
    phone.evaluate("""() => {
        const c = document.querySelector('#graph-canvas'), r = c.getBoundingClientRect();
        const cx = r.left + r.width / 2, cy = r.top + r.height / 2;
        const ev = (type, id, x) => c.dispatchEvent(new PointerEvent(type, {pointerId: id, pointerType: 'touch',
            clientX: x, clientY: cy, bubbles: true, isPrimary: id === 1}));
        ev('pointerdown', 1, cx - 20); ev('pointerdown', 2, cx + 20);
        for (let d = 20; d <= 80; d += 10) { ev('pointermove', 1, cx - d); ev('pointermove', 2, cx + d); }
        ev('pointerup', 1, cx - 80); ev('pointerup', 2, cx + 80);
    }""")
    assert scale(phone) > before * 1.5
    context.close()


def test_failures_first__banner_centres_the_failure_and_retries(page: Any, live_server: Any, runtime: Any,
                                                                operator_user: Any) -> None:
    steps = [{"id": "s0", "kind": "noop"}]
    steps += [{"id": f"s{i}", "kind": "noop", "deps": [f"s{i - 1}"]} for i in range(1, 14)]
    steps += [{"id": "late-check", "kind": "gate", "deps": ["s13"]}, {"id": "publish", "kind": "noop",
                                                                      "deps": ["late-check"]}]
    run_id = run_graph(runtime, steps, name="Long pipeline")
    drain(runtime)
    assert Run.objects.get(pk=run_id).state == "failed"
    login(page, live_server.url)
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(f"{live_server.url}/runs/{run_id}/")
    banner = page.locator(".failure-banner")
    expect(banner).to_contain_text("1 step failed")
    expect(banner).to_contain_text("late-check")
    expect(banner.locator("code")).to_have_text("gate_closed")
    # The failed step is far right of a 16-column pipeline, yet the graph opens on it.
    assert node_on_screen(page, 'a.node[data-step-id="late-check"]')
    assert not node_on_screen(page, 'a.node[data-step-id="s0"]')
    shoot_all(page, "run-failed-banner")

    page.once("dialog", lambda dialog: dialog.accept())
    banner.get_by_role("button", name="Retry failed steps").click()
    expect(page.locator("#toasts")).to_contain_text("Retried 1 failed steps")
    assert Step.objects.get(run_id=run_id, step_id="late-check").state == "ready"
    expect(page.locator(".failure-banner")).to_have_count(0)


def test_failures_first__viewer_sees_the_banner_without_the_retry_button(page: Any, live_server: Any,
                                                                        runtime: Any, viewer: Any) -> None:
    run_id = run_graph(runtime, [{"id": "g", "kind": "gate"}], name="Viewer run")
    drain(runtime)
    login(page, live_server.url, "vera", "pw-vera-123")
    page.goto(f"{live_server.url}/runs/{run_id}/")
    expect(page.locator(".failure-banner")).to_contain_text("gate_closed")
    expect(page.get_by_role("button", name="Retry failed steps")).to_have_count(0)


def test_live_runs_list__new_runs_appear_or_are_announced_when_filtered(page: Any, live_server: Any,
                                                                      runtime: Any, operator_user: Any) -> None:
    run_graph(runtime, [{"id": "a", "kind": "noop"}], name="Already there")
    login(page, live_server.url)
    page.goto(f"{live_server.url}/runs/")
    expect(page.locator("#runs-table")).to_contain_text("Already there")
    # Started elsewhere (the command line, another operator): it appears on its own.
    run_graph(runtime, [{"id": "a", "kind": "noop"}], name="Started from the CLI")
    expect(page.locator("#runs-table tbody tr").first).to_contain_text("Started from the CLI", timeout=8_000)

    # Filtered: rows stay where they are and a bar counts the newcomers.
    page.goto(f"{live_server.url}/runs/?package=t")
    first_row = page.locator("#runs-table tbody tr .run-cell a").first.inner_text()
    run_graph(runtime, [{"id": "a", "kind": "noop"}], name="Newcomer")
    bar = page.locator(".new-runs-bar")
    expect(bar).to_contain_text("1 new run: show", timeout=8_000)
    assert page.locator("#runs-table tbody tr .run-cell a").first.inner_text() == first_row
    shoot_all(page, "runs-new-runs-bar")
    bar.get_by_role("link").click()
    expect(page.locator("#runs-table tbody tr").first).to_contain_text("Newcomer")


def test_times__relative_in_the_viewers_zone_with_a_utc_switch(live_server: Any, runtime: Any, operator_user: Any,
                                                              browser: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone

    fresh = run_graph(runtime, [{"id": "a", "kind": "noop"}], name="Fresh run")
    old = run_graph(runtime, [{"id": "a", "kind": "noop"}], name="Old run")
    Run.objects.filter(pk=old).update(created_at=timezone.now() - timedelta(days=3))
    context = browser.new_context(timezone_id="Asia/Tokyo", viewport={"width": 1440, "height": 900})
    page = context.new_page()
    login(page, live_server.url)
    page.goto(f"{live_server.url}/runs/{fresh}/")
    created = page.locator(".facts time").first
    expect(created).to_have_text(re.compile(r"just now|\d+ s ago"))
    assert created.get_attribute("title").endswith("Asia/Tokyo")
    page.goto(f"{live_server.url}/runs/")
    old_time = page.locator("tr", has_text="Old run").locator("td.hide-narrow time")
    expect(old_time).to_have_text(re.compile(r"^[A-Z][a-z]{2} \d{1,2}(?: \d{4})?, \d\d:\d\d$"))
    tokyo = old_time.get_attribute("title")
    page.locator(".usermenu summary").click()
    page.get_by_role("button", name="Show times in UTC").click()
    expect(old_time).to_have_attribute("title", re.compile(r"UTC$"))
    assert old_time.get_attribute("title") != tokyo
    page.reload()
    expect(page.locator("tr", has_text="Old run").locator("td.hide-narrow time")).to_have_attribute("title", re.compile(r"UTC$"))
    context.close()


def test_small_things__phone_nav_runs_table_overview_table_and_breadcrumbs(page: Any, live_server: Any,
                                                                          runtime: Any, operator_user: Any) -> None:
    run_id = run_graph(runtime, [{"id": "g", "kind": "gate"}], name="Phone run")
    drain(runtime)
    # A long error message must not push the overview's failures table past its card.
    Step.objects.filter(run_id=run_id, step_id="g").update(
        error={"code": "gate_closed_with_a_rather_long_code_name", "message": "x" * 400, "retryable": False})
    login(page, live_server.url)
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(f"{live_server.url}/ops/")
    fits = page.evaluate("""() => {
        const t = document.querySelector('#failure-groups'); if (!t) return null;
        return t.getBoundingClientRect().right <= t.closest('.card').getBoundingClientRect().right + 1;
    }""")
    assert fits is not False
    shoot_all(page, "overview")

    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/runs/", f"/runs/{run_id}/"):
        page.goto(f"{live_server.url}{path}")
        # Every navigation item is on screen: nothing scrolls sideways.
        for link in page.locator(".mainnav a").all():
            box = link.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, link.inner_text()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert page.locator(".breadcrumbs a").first.inner_text() == "Overview"
    page.goto(f"{live_server.url}/runs/")
    row = page.locator("tr", has_text="Phone run")
    expect(row.locator(".show-narrow .badge")).to_have_text("failed")
    progress = row.locator(".progress-cell")
    box = progress.bounding_box()
    assert box and box["x"] + box["width"] <= 390, "progress is off-screen on a phone"
    shoot_all(page, "runs-phone")

    # The step page does not link to itself.
    page.goto(f"{live_server.url}/runs/{run_id}/steps/g/")
    expect(page.get_by_role("link", name="Open as a page")).to_have_count(0)


def test_find_anything__slash_searches_jk_moves_enter_opens_copy_and_help(page: Any, live_server: Any,
                                                                        runtime: Any, operator_user: Any) -> None:
    names = [f"Keyboard run {i}" for i in range(3)]
    ids = [run_graph(runtime, [{"id": "a", "kind": "noop"}], name=n) for n in names]
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    login(page, live_server.url)
    page.goto(f"{live_server.url}/runs/")
    page.locator("body").click(position={"x": 5, "y": 300})
    page.keyboard.press("j")
    page.keyboard.press("j")
    expect(page.locator("#runs-table tbody tr.kb-current")).to_contain_text(names[1])
    page.keyboard.press("k")
    expect(page.locator("#runs-table tbody tr.kb-current")).to_contain_text(names[2])
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(re.escape(ids[2])))

    page.locator("#run-live .copy-btn").click()
    assert page.evaluate("navigator.clipboard.readText()") == ids[2]
    page.keyboard.press("?")
    expect(page.locator("dialog#kb-help")).to_be_visible()
    shoot_all(page, "keyboard-help")
    page.keyboard.press("Escape")

    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "top-q"
    page.keyboard.type(ids[0])
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(re.escape(ids[0])))
    expect(page.locator("#run-live h1")).to_contain_text(names[0])
