"""Bulk recovery: "retry all these" from any failure view, previewed before it is confirmed.

GET ``ops/steps/retry/?<the steps console's filters>`` reads the preview (nothing is written):
the failed steps that would rerun (the first ones listed, all counted), the blocked dependents
that would then run, and the runs that would be running again. The confirmation POSTs the same
filters with the preview's binding (``as_of``, ``max_id``, ``expected``; see ``read.bulk``) and
runs through ``operator.retry_steps_bulk``: bounded batches, one event per step naming the user.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from .. import forms, operator
from ..engine.errors import InvalidState
from ..engine.values import StepState
from ..models import Step
from ..read import bulk
from .common import operator_action, viewer
from .consoles import StepFilters


def _failed_filters(params: Any) -> StepFilters:
    """The steps console's filters, held to failed steps: only those can be retried."""
    merged = {k: params.get(k, "") for k in StepFilters.NAMES}
    merged["state"] = StepState.FAILED
    return StepFilters.from_params(merged)


def _steps_qs(filters: StepFilters, now: Any) -> Any:
    return filters.apply(Step.objects.all(), now)


@viewer("workflow.view_run", "workflow.view_step")
def retry_preview(request: HttpRequest) -> HttpResponse:
    filters = _failed_filters(request.GET)
    now = timezone.now()
    preview = bulk.retry_preview(_steps_qs(filters, now), as_of=now) if not filters.field_errors else None
    return render(request, "workflow/consoles/retry_preview.html", {
        "filters": filters, "preview": preview, "bulk_max": bulk.BULK_MAX, "batch_size": bulk.BATCH_SIZE,
        "back_url": f"{reverse('consoles:steps')}?{urlencode(filters.query)}",
        "batches": -(-preview.selected // bulk.BATCH_SIZE) if preview else 0,
    }, status=400 if filters.field_errors else 200)


@operator_action
def retry_confirm(request: HttpRequest) -> HttpResponse:
    filters = _failed_filters(request.POST)
    if filters.field_errors:
        raise forms.BadInput("; ".join(f"{k}: {v}" for k, v in filters.field_errors.items()))
    now = timezone.now()
    binding = forms.parse_bulk_binding(request.POST, now=now)
    # The filters' time window is read at the preview's moment, so it selects what was shown.
    preview = bulk.retry_preview(_steps_qs(filters, binding.as_of), as_of=binding.as_of, max_id=binding.max_id,
                                 count_dependents=False)
    back = f"{reverse('consoles:steps')}?{urlencode(filters.query)}"
    if preview.selected > binding.expected:
        raise InvalidState(f"{preview.selected} failed steps match the previewed filters now, more than the "
                           f"{binding.expected} the preview showed; open the preview again.")
    if not preview.pairs:
        messages.info(request, "Nothing to retry: none of the previewed steps is failed any more.")
        return HttpResponseRedirect(back)
    bulk_id = uuid.uuid4().hex[:12]
    result = operator.retry_steps_bulk(
        preview.pairs, user=request.user, batch_size=bulk.BATCH_SIZE,
        payload={"bulk": {"id": bulk_id, "filters": filters.query, "as_of": binding.as_of.isoformat(),
                          "previewed": binding.expected}},
    )
    text = (f"Retried {result.done} failed step{'s' if result.done != 1 else ''} in {result.batches} "
            f"batch{'es' if result.batches != 1 else ''} (bulk {bulk_id}).")
    if result.skipped:
        text += f" {len(result.skipped)} skipped: " + "; ".join(result.skipped[:3])
        text += "…" if len(result.skipped) > 3 else ""
    messages.success(request, text)
    return HttpResponseRedirect(back)
