from __future__ import annotations

import xml.etree.ElementTree as ET

from workflow.read.graph import (
    EXPAND_PAGE,
    MAX_EXPANDED,
    SIBLING_LIMIT,
    GraphEdge,
    GraphNode,
    LaidOutNode,
    Layout,
    build_layout,
    format_expanded,
    parse_expanded,
    render_svg,
)

SVG = "{http://www.w3.org/2000/svg}"


def step(id: str, state: str = "pending", *, kind: str = "task", parent: str | None = None,
         blocked: bool = False) -> GraphNode:
    return GraphNode(id=id, kind=kind, state=state, parent=parent, blocked=blocked)


def dep(source: str, target: str, *, required: bool = True) -> GraphEdge:
    return GraphEdge(source=source, target=target, required=required)


def by_id(layout: Layout) -> dict[str, LaidOutNode]:
    return {n.id: n for n in layout.nodes}


def render(layout: Layout, selected: str | None = None) -> str:
    return render_svg(layout, step_url=lambda s: f"/steps/{s}", group_url=lambda g: f"?expand={g}",
                      selected=selected)


def test_layout__places_a_dependent_right_of_its_dependency():
    nodes = by_id(build_layout([step("b"), step("a")], [dep("a", "b")]))

    assert nodes["a"].x < nodes["b"].x


def test_layout__puts_a_diamond_on_three_layers():
    layout = build_layout(
        [step("top"), step("left"), step("right"), step("bottom")],
        [dep("top", "left"), dep("top", "right"), dep("left", "bottom"), dep("right", "bottom")],
    )
    nodes = by_id(layout)

    assert nodes["top"].x < nodes["left"].x == nodes["right"].x < nodes["bottom"].x
    assert nodes["left"].y != nodes["right"].y
    assert len(layout.edges) == 4
    assert layout.grouped is False


def test_layout__uses_the_longest_path_for_a_shortcut_edge():
    nodes = by_id(build_layout([step("a"), step("b"), step("c")], [dep("a", "b"), dep("b", "c"), dep("a", "c")]))

    assert nodes["a"].x < nodes["b"].x < nodes["c"].x


def test_layout__orders_a_chain_left_to_right_whatever_the_input_order():
    ids = ["s4", "s1", "s3", "s0", "s2"]
    nodes = by_id(build_layout([step(i) for i in ids], [dep(f"s{i}", f"s{i + 1}") for i in range(4)]))

    assert sorted(ids, key=lambda i: nodes[i].x) == ["s0", "s1", "s2", "s3", "s4"]


def test_layout__flags_an_optional_edge_as_not_required():
    layout = build_layout([step("a"), step("b"), step("c")], [dep("a", "c", required=False), dep("b", "c")])
    edges = {(e.source, e.target): e for e in layout.edges}

    assert edges[("a", "c")].required is False
    assert edges[("b", "c")].required is True
    assert 'class="edge optional"' in render(layout)


def test_layout__draws_each_edge_as_a_curve_from_source_right_to_target_left():
    layout = build_layout([step("a"), step("b")], [dep("a", "b")])
    a, b = by_id(layout)["a"], by_id(layout)["b"]
    (edge,) = layout.edges

    assert edge.path.startswith(f"M{a.x + a.w:g},{a.y + a.h / 2:g} C")
    assert edge.path.endswith(f" {b.x:g},{b.y + b.h / 2:g}")


def test_layout__places_emitted_children_right_of_their_parent_with_an_emitted_link():
    layout = build_layout(
        [step("split", "succeeded"), step("c1", parent="split"), step("c2", parent="split")], []
    )
    nodes = by_id(layout)

    assert nodes["c1"].x > nodes["split"].x
    assert nodes["c2"].x > nodes["split"].x
    assert {(e.source, e.target, e.emitted) for e in layout.edges} == {("split", "c1", True), ("split", "c2", True)}
    assert 'class="edge emitted"' in render(layout)


def test_layout__keeps_a_simple_two_layer_graph_uncrossed():
    nodes = by_id(build_layout([step("a1"), step("a2"), step("b1"), step("b2")], [dep("a1", "b2"), dep("a2", "b1")]))

    assert (nodes["a1"].y < nodes["a2"].y) == (nodes["b2"].y < nodes["b1"].y)


def test_layout__is_deterministic_for_the_same_input_in_any_order():
    nodes = [step(f"n{i}") for i in range(20)]
    edges = [dep(f"n{i}", f"n{(i * 7) % 20}") for i in range(20) if i < (i * 7) % 20]

    assert build_layout(nodes, edges) == build_layout(nodes[::-1], edges[::-1])


def test_layout__labels_single_steps_in_words_and_truncates_long_ids():
    layout = build_layout([step("a" * 40, "failed"), step("b", blocked=True)], [])
    nodes = by_id(layout)

    assert nodes["a" * 40].label.endswith("…") and len(nodes["a" * 40].label) <= 22
    assert nodes["a" * 40].sublabel == "failed"
    assert nodes["b"].sublabel == "blocked" and nodes["b"].blocked
    assert nodes["b"].href_step == "b"


def test_layout__survives_a_cycle():
    layout = build_layout([step("a"), step("b"), step("c")], [dep("a", "b"), dep("b", "c"), dep("c", "a")])

    assert {n.id for n in layout.nodes} == {"a", "b", "c"}
    assert len(layout.edges) == 3


def thousand_children() -> tuple[list[GraphNode], list[GraphEdge]]:
    children = [
        step(f"w{i:04}", "failed" if i < 10 else "succeeded", kind="work", parent="split") for i in range(1000)
    ]
    nodes = [step("split", "succeeded", kind="split"), *children, step("join", kind="join")]
    edges = [dep(c.id, "join") for c in children] + [dep("w0001", "join", required=False)]
    return nodes, edges


def test_grouping__collapses_a_thousand_children_into_one_group_with_counts_and_merged_edges():
    nodes, edges = thousand_children()
    layout = build_layout(nodes, edges)
    laid = by_id(layout)
    group = laid["split::work"]

    assert layout.grouped is True
    assert set(laid) == {"split", "split::work", "join"}
    assert group.is_group and group.group_key == "split::work" and group.href_step is None
    assert group.count == 1000
    assert dict(group.counts) == {"succeeded": 990, "failed": 10}
    assert group.state == "failed"
    assert group.label == "work ×1,000"
    assert group.sublabel == "990 succeeded · 10 failed"
    edges_by_pair = {(e.source, e.target): e for e in layout.edges}
    assert edges_by_pair[("split::work", "join")].count == 1001
    assert edges_by_pair[("split::work", "join")].required is True
    assert edges_by_pair[("split", "split::work")].emitted is True
    assert laid["split"].x < group.x < laid["join"].x


def test_grouping__colours_a_group_by_its_worst_state():
    nodes = [step("p", kind="p")] + [
        step(f"c{i}", state, kind="k", parent="p") for i, state in enumerate(["succeeded", "canceled", "running"])
    ]

    assert by_id(build_layout(nodes, [], group_threshold=2))["p::k"].state == "running"
    assert by_id(build_layout(nodes[:3], [], group_threshold=2))["p::k"].state == "canceled"


def test_grouping__shows_the_members_of_an_expanded_group():
    nodes, edges = thousand_children()
    layout = build_layout(nodes, edges, expanded={"split::work"})
    laid = by_id(layout)

    assert layout.grouped is True
    assert "split::work" not in laid
    # One page of members, plus split, join and one box for the 800 others.
    assert len(laid) == EXPAND_PAGE + 3
    assert laid["split::work@more"].count == 1000 - EXPAND_PAGE
    assert laid["split::work@more"].label.startswith("+800 more")
    assert layout.box_of["w0999"] == "split::work@more"


def test_grouping__pages_an_expanded_group_and_cycles_past_the_last_page():
    nodes, edges = thousand_children()
    second = by_id(build_layout(nodes, edges, expanded={"split::work": 1}))
    shown = sorted(k for k, n in second.items() if not n.is_group and k.startswith("w"))
    assert shown[0] == f"w{EXPAND_PAGE:04d}" and len(shown) == EXPAND_PAGE
    wrapped = by_id(build_layout(nodes, edges, expanded={"split::work": 5}))
    assert "w0000" in wrapped


def test_grouping__an_expanded_hundred_thousand_step_group_stays_bounded():
    children = [step(f"w{i:06d}", kind="work", parent="split") for i in range(100_000)]
    nodes = [step("split", "succeeded", kind="split"), *children]
    layout = build_layout(nodes, [], expanded={"split::work": 3})
    assert len(layout.nodes) == EXPAND_PAGE + 2
    assert len(render_svg(layout, step_url=str, group_url=str)) < 200_000


def test_grouping__collapses_a_large_sibling_set_even_in_a_small_run():
    children = [step(f"c{i}", kind="work", parent="root") for i in range(SIBLING_LIMIT + 1)]
    laid = by_id(build_layout([step("root", kind="split"), *children], []))
    assert set(laid) == {"root", "root::work"}


def test_parse_expanded__reads_pages_and_keeps_the_last_few():
    assert parse_expanded(["a::k", "b::k@2", "c@x"]) == {"a::k": 0, "b::k": 2, "c@x": 0}
    many = parse_expanded([f"g{i}::k" for i in range(10)])
    assert list(many) == [f"g{i}::k" for i in range(10 - MAX_EXPANDED, 10)]
    assert format_expanded({"a::k": 0, "b::k": 2}) == ["a::k", "b::k@2"]


def test_grouping__shows_a_group_of_one_as_its_single_step():
    nodes = [step(f"s{i}", kind="a") for i in range(5)] + [step("only", kind="b")]
    laid = by_id(build_layout(nodes, [], group_threshold=3))

    assert set(laid) == {"::a", "only"}
    assert laid["only"].is_group is False


def test_grouping__completes_for_ten_thousand_steps():
    children = [step(f"w{i}", "succeeded", kind="work", parent="split") for i in range(10_000)]
    nodes = [step("split", "succeeded", kind="split"), *children, step("join", kind="join")]
    layout = build_layout(nodes, [dep(c.id, "join") for c in children])

    assert layout.grouped is True
    assert by_id(layout)["split::work"].count == 10_000


def test_layout__handles_ten_thousand_ungrouped_steps():
    nodes = [step(f"s{i:05}") for i in range(10_000)]
    edges = [dep(f"s{i:05}", f"s{i + j:05}") for i in range(0, 10_000, 7) for j in (1, 3) if i + j < 10_000]
    layout = build_layout(nodes, edges, group_threshold=20_000)

    assert len(layout.nodes) == 10_000 and layout.grouped is False


def test_render_svg__escapes_user_supplied_step_ids():
    layout = build_layout([step("<script>alert(1)</script>"), step('x" onload="y')],
                          [dep("<script>alert(1)</script>", 'x" onload="y')])
    svg = render(layout, selected="<script>alert(1)</script>")

    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert 'onload="y' not in svg
    ET.fromstring(svg)


def test_render_svg__emits_accessible_links_with_state_classes():
    nodes, edges = thousand_children()
    svg = render(build_layout(nodes, edges), selected="split")
    root = ET.fromstring(svg)
    links = {a.get("data-step-id") or a.get("data-group-key"): a for a in root.iter(f"{SVG}a")}

    assert root.get("role") == "img" and root.get("viewBox", "").startswith("0 0 ")
    assert "1,002 steps" in root.get("aria-label", "")
    assert root.find(f"{SVG}defs/{SVG}marker").get("id") == "arrow"
    assert links["split"].get("class") == "node state-succeeded selected"
    assert links["split"].get("href") == "/steps/split"
    assert links["split::work"].get("class") == "node state-failed group"
    assert links["split::work"].get("href") == "?expand=split::work"
    assert all(a.get("tabindex") == "0" for a in links.values())
    assert all(a.find(f"{SVG}title") is not None and len(a.findall(f"{SVG}text")) == 2 for a in links.values())
    assert "fill=" not in svg and "style=" not in svg


def test_render_svg__marks_blocked_steps():
    svg = render(build_layout([step("a", "failed"), step("b", blocked=True)], [dep("a", "b")]))

    assert 'class="node state-pending blocked"' in svg
    assert 'marker-end="url(#arrow)"' in svg
