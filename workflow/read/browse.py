"""Results, artifacts and records browsers, and artifact previews."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from ..engine.errors import WorkflowError
from ..models import Artifact, Record, Run, Step
from .pages import Page, keyset_page
from .steps import STEP_STATES

PREVIEW_LIMIT_BYTES = 256 * 1024


ARTIFACT_LIST_FIELDS = (
    "id", "run", "step", "name", "kind", "content_type", "size", "sha256", "storage_key", "metadata", "created_at",
    "step__step_id", "step__state",
)


CSV_PREVIEW_ROWS = 200


# -- results, artifacts and records -------------------------------------------------------------
def results_page(
    run: Run, *, q: str = "", kind: str = "", state: str = "", limit: int = 50,
    after: str | None = None, before: str | None = None,
) -> Page:
    qs = Step.objects.filter(run=run).defer("input", "result", "error", "metadata", "retry")
    if q:
        qs = qs.filter(step_id__icontains=q)
    if kind:
        qs = qs.filter(kind=kind)
    if state in STEP_STATES:
        qs = qs.filter(state=state)
    return keyset_page(qs, fields=("step_id",), descending=False, limit=limit, after=after, before=before)


def artifacts_page(
    run: Run, *, q: str = "", step: str = "", kind: str = "", content_type: str = "", limit: int = 50,
    after: str | None = None, before: str | None = None,
) -> Page:
    qs = Artifact.objects.filter(run=run).select_related("step").only(*ARTIFACT_LIST_FIELDS)
    if q:
        qs = qs.filter(name__icontains=q)
    if step:
        qs = qs.filter(step__step_id=step)
    if kind:
        qs = qs.filter(kind=kind)
    if content_type:
        qs = qs.filter(content_type__startswith=content_type)
    return keyset_page(
        qs, fields=("created_at", "id"), descending=False, limit=limit, after=after, before=before,
    )


def records_page(
    *, collection: str = "", q: str = "", run_id: str = "", limit: int = 50,
    after: str | None = None, before: str | None = None,
) -> Page:
    qs = Record.objects.all()
    if collection:
        qs = qs.filter(collection=collection)
    if q:
        qs = qs.filter(key__icontains=q)
    if run_id:
        qs = qs.filter(run_id=run_id)
    return keyset_page(qs, fields=("collection", "key"), descending=False, limit=limit, after=after, before=before)


def record_collections(*, limit: int = 200) -> list[str]:
    return list(Record.objects.order_by("collection").values_list("collection", flat=True).distinct()[:limit])


class BlobMissing(LookupError):
    """The artifact's external blob is gone from the store."""


def open_artifact(artifact: Artifact) -> Any:
    """A binary file object with the artifact's bytes (inline body or external store)."""
    if artifact.is_inline:
        return io.BytesIO(bytes(artifact.body or b""))
    from ..conf import runtime

    store = runtime().artifact_store
    if store is None:
        raise BlobMissing(f"artifact {artifact.name!r} is stored externally but no artifact store is configured")
    try:
        return store.open(artifact.storage_key)
    except (OSError, WorkflowError) as exc:  # FileNotFoundError, or a key the store refuses
        raise BlobMissing(f"the blob of artifact {artifact.name!r} ({artifact.id}) is missing from the store") from exc


@dataclass(slots=True, kw_only=True)
class Preview:
    """What the preview pane shows; ``mode`` picks the template branch. Text is never marked safe."""

    mode: str  # json | text | csv | image | html | binary | missing
    text: str = ""
    rows: list[list[str]] = field(default_factory=list)
    truncated: bool = False
    message: str = ""


def preview_artifact(artifact: Artifact) -> Preview:
    ctype = (artifact.content_type or "").split(";")[0].strip().lower()
    if ctype.startswith("image/"):
        return Preview(mode="image")
    textual = ctype.startswith("text/") or ctype in {"application/json", "application/xml", "application/x-ndjson"}
    if not textual and not ctype.endswith("+json"):
        return Preview(mode="binary", message=f"{ctype or 'unknown type'}, {artifact.size:,} bytes: download to view.")
    try:
        with open_artifact(artifact) as fh:
            data = fh.read(PREVIEW_LIMIT_BYTES + 1)
    except BlobMissing as exc:
        return Preview(mode="missing", message=str(exc))
    truncated = len(data) > PREVIEW_LIMIT_BYTES
    text = data[:PREVIEW_LIMIT_BYTES].decode("utf-8", errors="replace")
    if ctype == "application/json" or ctype.endswith("+json"):
        if not truncated:
            try:
                return Preview(mode="json", text=json.dumps(json.loads(text), indent=2, ensure_ascii=False))
            except ValueError:
                pass
        return Preview(mode="text", text=text, truncated=truncated)
    if ctype == "text/csv":
        rows = []
        for i, row in enumerate(csv.reader(io.StringIO(text))):
            if i >= CSV_PREVIEW_ROWS:
                truncated = True
                break
            rows.append(row)
        return Preview(mode="csv", rows=rows, truncated=truncated)
    if ctype in {"text/html", "application/xhtml+xml"}:
        return Preview(mode="html", text=text, truncated=truncated)
    return Preview(mode="text", text=text, truncated=truncated)


def pretty_json(value: Any) -> str:
    """Indent JSON for a <pre>; the template escapes it."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
