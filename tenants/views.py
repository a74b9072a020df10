from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from tenants.selectors import memberships_for_user


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


@login_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    return render(request, "tenants/overview.html", {"memberships": memberships_for_user(request.user)})
