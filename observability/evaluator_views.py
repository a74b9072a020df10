"""The console's evaluators page: the tenant's evaluators and score definitions, an editor, a preview on a
recent call, and back-fills over past calls with their progress.

The editor writes what `evaluators:` in the tenant YAML writes, through the same grammar (parse_evaluators)
and service (evaluators_set, which replaces the whole list), so the console and YAML refuse the same
things; a refusal is shown next to the field it names. The preview scores one stored call with the editor's
values, saved or not, and stores nothing. Everyone in the tenant reads the page; changing evaluators,
previewing them (a judge's call is billed) and back-filling take CONFIG_WRITE.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from gateway_project.common.htmx import HtmxHttpRequest
from observability.backfills import backfill_progress, backfill_start
from observability.evaluators import (
    answer_text,
    evaluators_set,
    export_evaluators,
    judge_score,
    parse_evaluators,
    rule_score,
)
from observability.forms import BackfillForm, EvaluatorForm, EvaluatorPreviewForm
from observability.models import Evaluator, EvaluatorKind, ScoreKind
from observability.scores import BUILT_IN, definitions_of
from observability.selectors import (
    RecentCall,
    body_by_id,
    recent_calls_with_bodies,
    score_definitions,
    score_names,
    tenant_evaluators,
)
from routing.selectors import model_names_for
from tenants.config import ConfigError, _Checker, _Located
from tenants.permissions import CONFIG_WRITE, TenantAccess, tenant_access

SECTION = "evaluators"
# Where the grammar says a refusal is: "evaluators[2].applies_to.models[0]: message".
_REFUSAL = re.compile(r"evaluators\[(\d+)\]((?:\.\w+|\[\d+\])*): (.*)", re.S)


def _grammar() -> _Checker:
    """The YAML reader's own checks (tenants.config), without lines: a refusal names its field path."""
    return _Checker(_Located())


def _call_label(call: RecentCall) -> str:
    parts = [call.created_at.strftime("%Y-%m-%d %H:%M:%S"), call.model or "?", call.request_id]
    if call.status_code is not None and call.status_code >= 400:
        parts.append(str(call.status_code))
    return " · ".join(parts)


def _page_context(access: TenantAccess, **extra: Any) -> dict[str, Any]:
    tenant = access.tenant
    evaluators = list(tenant_evaluators(tenant))
    calls = recent_calls_with_bodies(tenant) if access.can(CONFIG_WRITE) else []
    context: dict[str, Any] = {
        "section": SECTION,
        "evaluators": evaluators,
        "definitions": list(score_definitions(tenant)),
        "built_in": BUILT_IN,
        "form": EvaluatorForm(),
        "editing": "",
        "preview_form": EvaluatorPreviewForm(calls=[(c.body_id, _call_label(c)) for c in calls]),
        "calls": calls,
        "backfill_form": BackfillForm(evaluators=[e.name for e in evaluators]),
        "score_names": score_names(tenant),
        "models": model_names_for(tenant),
    }
    context.update(extra)
    return context


def _place_refusal(form: EvaluatorForm, exc: ConfigError, *, index: int, names: list[str]) -> None:
    """The grammar's or the service's refusal next to the field it is about, when it is about the evaluator
    in the form (item `index`); about another one, or the list, above the form."""
    text = str(exc)
    match = _REFUSAL.fullmatch(text)
    if match is None:
        form.add_error(None, text)
        return
    i, path, message = int(match.group(1)), match.group(2), match.group(3)
    if i != index:
        name = names[i] if i < len(names) else f"#{i + 1}"
        form.add_error(None, f"The evaluator {name!r}: {message}")
        return
    parts = [re.sub(r"\[\d+\]$", "", p) for p in path.split(".") if p and p != "applies_to"]
    field = parts[0] if parts else ""
    form.add_error(field if field in form.fields and field != "original" else None, message)


def _write(access: TenantAccess, items: list[dict[str, Any]], *, form: EvaluatorForm, index: int) -> bool:
    """Replace the tenant's evaluators by `items` (YAML items) as `gateway apply` does; False with the
    refusal placed on the form."""
    try:
        wanted = parse_evaluators(items, "evaluators", _grammar())
        evaluators_set(access.tenant, wanted, actor=access.actor)
    except ConfigError as exc:
        _place_refusal(form, exc, index=index, names=[str(item.get("name", "")) for item in items])
        return False
    return True


def _save(access: TenantAccess, form: EvaluatorForm) -> bool:
    """Add the form's evaluator, or replace the one it edits (`original`), keeping the others as they are."""
    if not form.is_valid():
        return False
    original = form.cleaned_data["original"]
    current = export_evaluators(access.tenant) or []
    if original and not any(item["name"] == original for item in current):
        form.add_error(None, f"The evaluator {original!r} is gone (deleted or renamed meanwhile); add it anew.")
        return False
    # The form's evaluator last: a name used twice is then refused on the form's name, not the other's.
    items = [item for item in current if item["name"] != original] + [form.item()]
    return _write(access, items, form=form, index=len(items) - 1)


def _saved(request: HtmxHttpRequest, slug: str, message: str) -> HttpResponse:
    messages.success(request, message)
    url = reverse("evaluators", kwargs={"slug": slug})
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _editor(request: HtmxHttpRequest, access: TenantAccess, form: EvaluatorForm, *, editing: str) -> HttpResponse:
    if request.htmx:
        context = {"form": form, "editing": editing, "score_names": score_names(access.tenant)}
        context["models"] = model_names_for(access.tenant)
        return render(request, "observability/evaluators.html#editor", context)
    return render(request, "observability/evaluators.html", _page_context(access, form=form, editing=editing))


@login_required
@require_http_methods(["GET", "POST"])
def evaluators(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """The page; a POST adds an evaluator. `?evaluator=<name>&run=<id>` shows a back-fill's progress (where
    starting one without JavaScript lands)."""
    access = tenant_access(request, slug)
    if request.method == "GET":
        extra: dict[str, Any] = {}
        name, run = request.GET.get("evaluator", ""), request.GET.get("run", "")
        if name and run:
            extra.update(run=run, run_evaluator=name, progress=backfill_progress(access.tenant.id, name, run))
        return render(request, "observability/evaluators.html", _page_context(access, **extra))
    access.require(CONFIG_WRITE)
    form = EvaluatorForm(request.POST)
    if _save(access, form):
        return _saved(request, slug, f"Saved the evaluator {form.cleaned_data['name']}.")
    return _editor(request, access, form, editing="")


@login_required
@require_http_methods(["GET", "POST"])
def evaluator_edit(request: HtmxHttpRequest, slug: str, name: str) -> HttpResponse:
    access = tenant_access(request, slug)
    item = next((item for item in export_evaluators(access.tenant) or [] if item["name"] == name), None)
    if item is None:
        raise Http404("No such evaluator in this tenant.")
    if request.method == "GET":
        return _editor(request, access, EvaluatorForm(initial=EvaluatorForm.initial_from(item)), editing=name)
    access.require(CONFIG_WRITE)
    form = EvaluatorForm(request.POST)
    if _save(access, form):
        return _saved(request, slug, f"Saved the evaluator {form.cleaned_data['name']}.")
    return _editor(request, access, form, editing=name)


@login_required
@require_POST
def evaluator_delete(request: HtmxHttpRequest, slug: str, name: str) -> HttpResponse:
    access = tenant_access(request, slug, CONFIG_WRITE)
    current = export_evaluators(access.tenant) or []
    if not any(item["name"] == name for item in current):
        raise Http404("No such evaluator in this tenant.")
    form = EvaluatorForm()
    items = [item for item in current if item["name"] != name]
    if not _write(access, items, form=form, index=-1):
        # The others no longer hold (a judge's model was removed since): say which, change nothing.
        messages.error(request, " ".join(str(e) for e in form.non_field_errors()))
    else:
        messages.success(request, f"Deleted the evaluator {name}; the scores it gave stay.")
    url = reverse("evaluators", kwargs={"slug": slug})
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


# --- Try on a recent call ---------------------------------------------------------------------------


def _preview(access: TenantAccess, editor: EvaluatorForm, preview_form: EvaluatorPreviewForm) -> dict[str, Any]:
    if not editor.is_valid():
        problems = "; ".join(
            f"{editor[f].label if f in editor.fields else 'evaluator'}: {' '.join(errors)}"
            for f, errors in editor.errors.items()
        )
        return {"preview_error": f"Fix the evaluator in the editor first ({problems})."}
    try:
        row = parse_evaluators([editor.item()], "evaluators", _grammar())[0]
    except ConfigError as exc:
        return {"preview_error": f"Fix the evaluator in the editor first ({exc})."}
    if not preview_form.is_valid():
        return {}
    body = body_by_id(access.tenant, preview_form.cleaned_data["call"])
    if body is None:  # purged since the list was drawn
        return {"preview_error": "That call's bodies are no longer stored: pick another."}
    e = Evaluator(
        tenant=access.tenant,
        name=row["name"],
        kind=row["kind"],
        score=row["score"],
        model=row["model"],
        prompt=row["prompt"],
        params=row["params"],
    )
    answer = answer_text(body.response_body)
    context: dict[str, Any] = {"answer": answer, "evaluator": e}
    if e.kind != EvaluatorKind.LLM:
        context["value"] = rule_score(e, answer)
        return context
    definition = definitions_of(access.tenant.id).get(e.score) or {"kind": ScoreKind.BOOLEAN}
    try:
        value = judge_score(e, body.request_body, answer, definition)
    except Exception as exc:  # the judge's model failed or the gateway is unreachable: that is the answer
        return {**context, "preview_error": f"The judge could not be asked: {type(exc).__name__}: {exc}"}
    if value is None:
        return {**context, "preview_error": f"The judge's reply held no valid value of the score {e.score!r}."}
    return {**context, "value": value}


@login_required
@require_POST
def evaluator_preview(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """The editor's evaluator, saved or not, on one recent call with stored bodies; no score is stored."""
    access = tenant_access(request, slug, CONFIG_WRITE)
    calls = recent_calls_with_bodies(access.tenant)
    preview_form = EvaluatorPreviewForm(request.POST, calls=[(c.body_id, _call_label(c)) for c in calls])
    context: dict[str, Any] = {"preview_form": preview_form, "calls": calls}
    if calls:
        context.update(_preview(access, EvaluatorForm(request.POST), preview_form))
    if not request.htmx:
        # Without htmx the editor's boxes come along only when the browser sent them.
        editor = EvaluatorForm(request.POST) if "kind" in request.POST else EvaluatorForm()
        return render(request, "observability/evaluators.html", _page_context(access, form=editor, **context))
    return render(request, "observability/evaluators.html#preview_result", context)


# --- Back-fill --------------------------------------------------------------------------------------


@login_required
@require_POST
def evaluator_backfill(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    access = tenant_access(request, slug, CONFIG_WRITE)
    evaluators = {e.name: e for e in tenant_evaluators(access.tenant)}
    form = BackfillForm(request.POST, evaluators=list(evaluators))
    context: dict[str, Any] = {"backfill_form": form}
    if form.is_valid():
        e, data = evaluators[form.cleaned_data["evaluator"]], form.cleaned_data
        run = backfill_start(access.tenant, e, since=data["since"], until=data["until"], actor=access.actor)
        if not request.htmx:
            query = urlencode({"evaluator": e.name, "run": run})
            return redirect(f"{reverse('evaluators', kwargs={'slug': slug})}?{query}")
        context.update(run=run, run_evaluator=e.name, progress=backfill_progress(access.tenant.id, e.name, run))
    if not request.htmx:
        return render(request, "observability/evaluators.html", _page_context(access, **context))
    return render(request, "observability/evaluators.html#backfill", context)


@login_required
@require_GET
def evaluator_backfill_progress(request: HtmxHttpRequest, slug: str, name: str, run: str) -> HttpResponse:
    """A back-fill's progress, polled each second by the page until it is finished."""
    access = tenant_access(request, slug)
    progress = backfill_progress(access.tenant.id, name, run)
    if progress is None and not request.htmx:
        raise Http404("No such back-fill (runs are kept for a day).")
    # To htmx an unknown run is a 200 that says so: it leaves a 404 unswapped, and would poll forever.
    context = {"run": run, "run_evaluator": name, "progress": progress}
    return render(request, "observability/evaluators.html#progress", context)
