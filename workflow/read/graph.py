"""Layered left-to-right layout and SVG of a run's step graph for the operator dashboard.

Standard library only, so it is testable without Django; past a size threshold steps collapse
into (parent, kind) groups so 10,000-step runs stay readable and fast.
"""

from __future__ import annotations

import hashlib
import html
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

STATES = ("pending", "ready", "running", "succeeded", "failed", "canceled")
# Worst first: decides the colour of a group whose members are in mixed states.
_SEVERITY = ("failed", "running", "ready", "pending", "canceled", "succeeded")
# Reading order of a group's count summary ("9,990 succeeded · 10 failed").
_SUMMARY_ORDER = ("succeeded", "running", "ready", "pending", "blocked", "failed", "canceled")

NODE_W = 184.0
NODE_H = 44.0
COL_GAP = 72.0
ROW_GAP = 14.0
MARGIN = 16.0
LABEL_MAX = 22
SWEEPS = 4
# An expanded group shows this many members at a time; the rest stay one "more" box, so a page
# costs the same whether the group holds 400 steps or 100,000.
EXPAND_PAGE = 200
# At most this many groups are expanded at once (older ones collapse again): bounds every page.
MAX_EXPANDED = 4
# Below the grouping threshold, a set of emitted siblings (same parent and kind) larger than this
# still collapses: a 150-step fan-out would otherwise be one column 8,000 px tall.
SIBLING_LIMIT = 40


@dataclass(frozen=True, slots=True, kw_only=True)
class GraphNode:
    """A step as the graph needs it: decoupled from the ORM so layout stays testable."""

    id: str
    kind: str
    state: str
    parent: str | None = None
    blocked: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class GraphEdge:
    """A dependency: `target` waits for `source`; optional ones are drawn dashed."""

    source: str
    target: str
    required: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class LaidOutNode:
    """A positioned box: one step, or a collapsed (parent, kind) group of steps."""

    id: str
    label: str
    sublabel: str
    state: str
    kind: str
    blocked: bool = False
    is_group: bool = False
    group_key: str | None = None
    count: int = 1
    counts: tuple[tuple[str, int], ...] = ()
    title: str = ""
    x: float
    y: float
    w: float = NODE_W
    h: float = NODE_H
    href_step: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LaidOutEdge:
    """A drawn link; `count` > 1 when several step edges were merged between groups."""

    source: str
    target: str
    required: bool
    emitted: bool
    path: str
    count: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """Everything the template needs; `grouped` says the grouping threshold was exceeded."""

    width: float
    height: float
    nodes: tuple[LaidOutNode, ...]
    edges: tuple[LaidOutEdge, ...]
    grouped: bool
    box_of: dict[str, str] | None = None  # step id -> the id of the box that shows it
    group_of: dict[str, str] | None = None  # step id -> its group key


@dataclass(slots=True, kw_only=True)
class _Box:
    id: str
    kind: str
    state: str
    blocked: bool
    label: str
    sublabel: str
    title: str
    group_key: str | None = None
    count: int = 1
    counts: tuple[tuple[str, int], ...] = ()


def group_key(parent: str | None, kind: str, needs: Sequence[str] = ()) -> str:
    """The key used in `expanded` and group URLs; stable across requests.

    Emitted steps group by (parent, kind). Declared top-level steps also need the same required
    dependencies to share a box, so a pipeline's extract, load and report (all one kind) stay apart
    while the thousand transforms between them collapse.
    """
    if parent is None and needs:
        digest = hashlib.sha1("\n".join(sorted(needs)).encode(), usedforsecurity=False).hexdigest()[:8]
        return f"::{kind}#{digest}"
    return f"{parent or ''}::{kind}"


def group_keys(nodes: Sequence[GraphNode], edges: Sequence[GraphEdge]) -> dict[str, str]:
    """Each step's group key (see `group_key`)."""
    needs: dict[str, list[str]] = defaultdict(list)
    top = {n.id for n in nodes if n.parent is None}
    for e in edges:
        if e.required and e.target in top:
            needs[e.target].append(e.source)
    return {n.id: group_key(n.parent, n.kind, needs.get(n.id, ())) for n in nodes}


def parse_expanded(values: Sequence[str]) -> dict[str, int]:
    """Read ``key`` or ``key@page`` entries into {group key: page}; keep the last MAX_EXPANDED."""
    pages: dict[str, int] = {}
    for value in values:
        key, sep, page = value.rpartition("@")
        if not sep or not page.isdigit() or len(page) > 7:
            key, page = value, "0"
        if key:
            pages.pop(key, None)
            pages[key] = int(page)
    return dict(list(pages.items())[-MAX_EXPANDED:])


def format_expanded(pages: dict[str, int]) -> list[str]:
    """The inverse of `parse_expanded`, for building links."""
    return [key if page == 0 else f"{key}@{page}" for key, page in pages.items()]


def _truncate(text: str, limit: int = LABEL_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _group_state(tally: Counter[str]) -> str:
    present = {"pending" if s == "blocked" else s for s in tally}
    for state in _SEVERITY:
        if state in present:
            return state
    return min(present, default="pending")


def _collapse(
    nodes: Sequence[GraphNode], keys: dict[str, str], grouped: bool, expanded: Collection[str] | dict[str, int],
    *, sibling_limit: int = SIBLING_LIMIT, page_size: int = EXPAND_PAGE,
) -> tuple[dict[str, _Box], dict[str, str]]:
    """Return display boxes and a map step id -> box id (itself, its group, or its group's "more")."""
    members: dict[str, list[GraphNode]] = defaultdict(list)
    for n in nodes:
        members[keys[n.id]].append(n)
    pages = expanded if isinstance(expanded, dict) else dict.fromkeys(expanded, 0)

    def collapses(key: str) -> bool:
        # Declared top-level steps keep their own boxes below the threshold: their edges are the story.
        size = len(members[key])
        return size > 1 and (grouped or (size > sibling_limit and not key.startswith("::")))

    # An expanded group shows one page of members (by id); the others share a "more" box.
    hidden: dict[str, list[GraphNode]] = {}
    visible: set[str] = set()
    for key, page in pages.items():
        group = members.get(key)
        if not group or not collapses(key):
            continue
        ordered = sorted(group, key=lambda n: n.id)
        pages_total = -(-len(ordered) // page_size)
        page %= pages_total  # past the last page the "more" box cycles back to the first
        start = page * page_size
        visible.update(n.id for n in ordered[start:start + page_size])
        rest = ordered[:start] + ordered[start + page_size:]
        if rest:
            hidden[key] = rest
    boxes: dict[str, _Box] = {}
    rep: dict[str, str] = {}
    for n in nodes:
        key = keys[n.id]
        if collapses(key) and n.id not in visible:
            rep[n.id] = f"{key}@more" if key in hidden else key
            continue
        rep[n.id] = n.id
        word = ("blocked" if n.blocked else n.state)
        boxes[n.id] = _Box(
            id=n.id, kind=n.kind, state=n.state, blocked=n.blocked, label=_truncate(n.id),
            sublabel=word, title=f"{n.id} ({n.kind}): {word}",
        )
    for key, group in members.items():
        if not collapses(key):
            continue
        if key in pages:
            if key not in hidden:
                continue
            group, box_id = hidden[key], f"{key}@more"
        else:
            box_id = key
        tally = Counter(("blocked" if n.blocked else n.state) for n in group)
        counts = tuple((s, tally[s]) for s in _SUMMARY_ORDER if s in tally)
        counts += tuple(sorted((s, c) for s, c in tally.items() if s not in _SUMMARY_ORDER))
        state = _group_state(tally)
        pending = tally["pending"] + tally["blocked"]
        summary = " · ".join(f"{c:,} {s}" for s, c in counts)
        parent, kind = group[0].parent, group[0].kind
        more = box_id != key
        label = f"+{len(group):,} more {kind}" if more else f"{kind} ×{len(group):,}"
        boxes[box_id] = _Box(
            id=box_id, kind=kind, state=state, blocked=state == "pending" and tally["blocked"] == pending,
            label=_truncate(label), sublabel=summary,
            title=f"{parent or '(top level)'}/{kind}: {len(group):,} {'more ' if more else ''}steps: {summary}",
            group_key=key, count=len(group), counts=counts,
        )
    return boxes, rep


def _merge_edges(
    nodes: Sequence[GraphNode], edges: Sequence[GraphEdge], rep: dict[str, str]
) -> dict[tuple[str, str, bool], list]:
    """(source box, target box, emitted) -> [required, count]; self-loops inside a group vanish."""
    merged: dict[tuple[str, str, bool], list] = {}
    for e in edges:
        s, t = rep.get(e.source), rep.get(e.target)
        if s is None or t is None or s == t:
            continue
        cur = merged.setdefault((s, t, False), [False, 0])
        cur[0] = cur[0] or e.required
        cur[1] += 1
    for n in nodes:
        s, t = rep.get(n.parent) if n.parent is not None else None, rep[n.id]
        if s is None or s == t or (s, t, False) in merged:
            continue  # a real dependency already shows the ordering
        merged.setdefault((s, t, True), [True, 0])[1] += 1
    return merged


def _layers(ids: list[str], succ: dict[str, list[str]]) -> dict[str, int]:
    """Longest-path layering; DFS back edges are ignored so a cycle cannot loop forever."""
    color = dict.fromkeys(ids, 0)  # 0 unseen, 1 on stack, 2 done
    postorder: list[str] = []
    back: set[tuple[str, str]] = set()
    for root in ids:
        if color[root]:
            continue
        color[root] = 1
        stack = [(root, iter(succ[root]))]
        while stack:
            v, it = stack[-1]
            for w in it:
                if color[w] == 0:
                    color[w] = 1
                    stack.append((w, iter(succ[w])))
                    break
                if color[w] == 1:
                    back.add((v, w))
            else:
                color[v] = 2
                postorder.append(v)
                stack.pop()
    layer = dict.fromkeys(ids, 0)
    for v in reversed(postorder):  # a topological order of the graph minus back edges
        for w in succ[v]:
            if (v, w) not in back and layer[w] <= layer[v]:
                layer[w] = layer[v] + 1
    return layer


def _sweep(row: list[str], nbrs: dict[str, list[str]], pos: dict[str, int]) -> None:
    def key(v: str) -> tuple[float, str]:
        ns = nbrs[v]
        return (sum(pos[u] for u in ns) / len(ns) if ns else float(pos[v]), v)

    row.sort(key=key)
    for i, v in enumerate(row):
        pos[v] = i


def _order(layer: dict[str, int], succ: dict[str, list[str]], pred: dict[str, list[str]]) -> list[list[str]]:
    """Barycenter sweeps down and up to reduce crossings; ties broken by id for stable output."""
    rows: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for v in sorted(layer):
        rows[layer[v]].append(v)
    pos = {v: i for row in rows for i, v in enumerate(row)}
    for _ in range(SWEEPS):
        for i in range(1, len(rows)):
            _sweep(rows[i], pred, pos)
        for i in range(len(rows) - 2, -1, -1):
            _sweep(rows[i], succ, pos)
    return rows


def _n(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _curve(src: LaidOutNode, tgt: LaidOutNode) -> str:
    sx, sy = src.x + src.w, src.y + src.h / 2
    tx, ty = tgt.x, tgt.y + tgt.h / 2
    dx = max(abs(tx - sx) / 2, 24.0)
    return f"M{_n(sx)},{_n(sy)} C{_n(sx + dx)},{_n(sy)} {_n(tx - dx)},{_n(ty)} {_n(tx)},{_n(ty)}"


def build_layout(
    nodes: Sequence[GraphNode],
    edges: Sequence[GraphEdge],
    *,
    group_threshold: int = 200,
    expanded: Collection[str] | dict[str, int] = (),
    sibling_limit: int = SIBLING_LIMIT,
    page_size: int = EXPAND_PAGE,
) -> Layout:
    """Lay out a run's steps left to right; collapse (parent, kind) groups past `group_threshold`.

    `expanded` names groups to open (or maps them to the page of members to show).
    """
    keys = group_keys(nodes, edges)
    boxes, rep = _collapse(nodes, keys, len(nodes) > group_threshold, expanded,
                           sibling_limit=sibling_limit, page_size=page_size)
    grouped = any(b.group_key is not None for b in boxes.values())
    merged = _merge_edges(nodes, edges, rep)
    ids = sorted(boxes)
    succ: dict[str, list[str]] = {v: [] for v in ids}
    pred: dict[str, list[str]] = {v: [] for v in ids}
    for s, t, _emitted in sorted(merged):
        succ[s].append(t)
        pred[t].append(s)
    rows = _order(_layers(ids, succ), succ, pred)

    pitch = NODE_H + ROW_GAP
    tallest = max((len(r) for r in rows), default=0)
    placed: dict[str, LaidOutNode] = {}
    for li, row in enumerate(rows):
        top = MARGIN + (tallest - len(row)) * pitch / 2
        for i, v in enumerate(row):
            b = boxes[v]
            placed[v] = LaidOutNode(
                id=b.id, label=b.label, sublabel=b.sublabel, state=b.state, kind=b.kind,
                blocked=b.blocked, is_group=b.group_key is not None, group_key=b.group_key,
                count=b.count, counts=b.counts, title=b.title,
                x=MARGIN + li * (NODE_W + COL_GAP), y=top + i * pitch,
                href_step=None if b.group_key is not None else b.id,
            )
    laid_edges = tuple(
        LaidOutEdge(source=s, target=t, required=req, emitted=emitted,
                    path=_curve(placed[s], placed[t]), count=count)
        for (s, t, emitted), (req, count) in sorted(merged.items(), key=lambda kv: (not kv[0][2], kv[0]))
    )
    width = 2 * MARGIN + len(rows) * NODE_W + max(len(rows) - 1, 0) * COL_GAP
    height = 2 * MARGIN + tallest * NODE_H + max(tallest - 1, 0) * ROW_GAP
    return Layout(
        width=width, height=height, nodes=tuple(placed[v] for row in rows for v in row),
        edges=laid_edges, grouped=grouped, box_of=rep, group_of=keys,
    )


def render_svg(
    layout: Layout,
    *,
    step_url: Callable[[str], str],
    group_url: Callable[[str], str],
    selected: str | None = None,
) -> str:
    """Render a layout as an accessible, link-rich inline SVG; all user text is escaped."""
    # CSS classes emitted (colours live in the site stylesheet, none inline):
    #   svg.workflow-graph, g.edges, g.nodes, path.arrowhead (inside <marker id="arrow">)
    #   path.edge + one of .required | .optional (dashed) | .emitted (thin dotted), + .merged when count > 1
    #   a.node + .state-{pending|ready|running|succeeded|failed|canceled|unknown}
    #          + .blocked, .group, .selected (as applicable)
    #   rect inside a.node; text.label, text.sublabel
    e = html.escape
    steps = sum(n.count for n in layout.nodes)
    w, h = _n(layout.width), _n(layout.height)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="workflow-graph" viewBox="0 0 {w} {h}" '
        f'width="{w}" height="{h}" role="img" aria-label="{e(f"Workflow graph of {steps:,} steps")}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path class="arrowhead" d="M0,0 L10,5 L0,10 z"/></marker></defs>',
        '<g class="edges">',
    ]
    for edge in layout.edges:
        kind = "emitted" if edge.emitted else "required" if edge.required else "optional"
        classes = f"edge {kind}" + (" merged" if edge.count > 1 else "")
        marker = "" if edge.emitted else ' marker-end="url(#arrow)"'
        what = "emitted" if edge.emitted else f"{edge.count:,} {kind} dependenc{'ies' if edge.count > 1 else 'y'}"
        out.append(
            f'<path class="{classes}" d="{edge.path}"{marker} data-source="{e(edge.source)}" '
            f'data-target="{e(edge.target)}" data-count="{edge.count}">'
            f"<title>{e(f'{edge.source} → {edge.target} ({what})')}</title></path>"
        )
    out.append('</g><g class="nodes">')
    for node in layout.nodes:
        state = node.state if node.state in STATES else "unknown"
        classes = ["node", f"state-{state}"]
        if node.is_group:
            classes.append("group")
            href, ident = group_url(node.id), f'data-group-key="{e(node.id)}"'
        else:
            href, ident = step_url(node.href_step or node.id), f'data-step-id="{e(node.id)}"'
        is_selected = selected is not None and node.id == selected
        classes += [c for c, on in (("blocked", node.blocked), ("selected", is_selected)) if on]
        current = ' aria-current="true"' if is_selected else ""
        x, y = node.x, node.y
        out.append(
            f'<a href="{e(href)}" class="{" ".join(classes)}" {ident} tabindex="0"{current}>'
            f"<title>{e(node.title or node.id)}</title>"
            f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(node.w)}" height="{_n(node.h)}" rx="6" ry="6"/>'
            f'<text class="label" x="{_n(x + 10)}" y="{_n(y + 18)}">{e(node.label)}</text>'
            f'<text class="sublabel" x="{_n(x + 10)}" y="{_n(y + 34)}">{e(node.sublabel)}</text></a>'
        )
    out.append("</g></svg>")
    return "\n".join(out)
