"""Per-run results and artifacts browsers, artifact download, and the records browser."""

from __future__ import annotations

from typing import Any

from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from ..engine.content_types import is_content_type
from ..models import Artifact, Run, Step
from ..read import browse, steps
from .common import render_fragment, viewer

PER_PAGE = 50


def _params(request: HttpRequest, *names: str) -> dict[str, str]:
    return {n: request.GET.get(n, "").strip() for n in names}


@viewer("workflow.view_run", "workflow.view_step")
def results(request: HttpRequest, run_id: str) -> HttpResponse:
    run = get_object_or_404(Run, pk=run_id)
    p = _params(request, "q", "kind", "state", "sel")
    selected = None
    if p["sel"]:
        selected = Step.objects.filter(run=run, step_id=p["sel"]).only(
            "id", "run", "step_id", "kind", "state", "result", "error", "finished_at", "attempt"
        ).first()
    preview = {"selected": selected, "run": run,
               "result_json": browse.pretty_json(selected.result) if selected and selected.result is not None else ""}
    if request.htmx and request.htmx.target == "preview-pane":
        return render_fragment(request, "workflow/_result_preview.html", preview)
    page = browse.results_page(run, q=p["q"], kind=p["kind"], state=p["state"], limit=PER_PAGE,
                                after=request.GET.get("after"), before=request.GET.get("before"))
    return render(request, "workflow/results.html", {
        **preview, "page": page, "params": p, "kinds": steps.step_kinds(run), "states": steps.STEP_STATES,
    })


@viewer("workflow.view_run", "workflow.view_artifact")
def artifacts(request: HttpRequest, run_id: str) -> HttpResponse:
    run = get_object_or_404(Run, pk=run_id)
    p = _params(request, "q", "step", "kind", "type", "sel")
    selected = None
    if p["sel"]:
        selected = Artifact.objects.filter(run=run, pk=p["sel"]).select_related("step").defer("body").first()
    preview: dict[str, Any] = {"selected": selected, "run": run,
                               "preview": browse.preview_artifact(selected) if selected else None}
    if request.htmx and request.htmx.target == "preview-pane":
        return render_fragment(request, "workflow/_artifact_preview.html", preview)
    page = browse.artifacts_page(run, q=p["q"], step=p["step"], kind=p["kind"], content_type=p["type"],
                                  limit=PER_PAGE, after=request.GET.get("after"), before=request.GET.get("before"))
    types = list(Artifact.objects.filter(run=run).order_by("content_type")
                 .values_list("content_type", flat=True).distinct()[:50])
    return render(request, "workflow/artifacts.html", {**preview, "page": page, "params": p, "types": types})


@viewer("workflow.view_artifact")
def download_artifact(request: HttpRequest, artifact_id: str) -> HttpResponse:
    """Stream an artifact as an attachment; the browser must never render it as a page of ours."""
    artifact = get_object_or_404(Artifact.objects.defer("body"), pk=artifact_id)
    if artifact.is_inline:
        artifact = Artifact.objects.get(pk=artifact_id)
    try:
        fh = browse.open_artifact(artifact)
    except browse.BlobMissing as exc:
        raise Http404(str(exc)) from exc
    # A content type stored before writes were checked may not be a header value: send bytes.
    content_type = artifact.content_type if is_content_type(artifact.content_type) else "application/octet-stream"
    response = FileResponse(fh, as_attachment=True, filename=artifact.name, content_type=content_type)
    if not response.has_header("Content-Length") and artifact.size is not None:
        response["Content-Length"] = str(artifact.size)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=0"
    return response


@viewer("workflow.view_record")
def records(request: HttpRequest) -> HttpResponse:
    p = _params(request, "collection", "q", "run")
    page = browse.records_page(collection=p["collection"], q=p["q"], run_id=p["run"], limit=PER_PAGE,
                                after=request.GET.get("after"), before=request.GET.get("before"))
    return render(request, "workflow/records.html", {
        "page": page, "params": p, "collections": browse.record_collections(),
    })
