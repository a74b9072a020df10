"""A/B splits that end themselves (`split.stop_when`): once each group has enough scored calls, the
verdict (observability.ab.decide) sends every call to the winner (the split at 100 % to the variant) or
keeps them with the control group (the split removed). The change goes through routing.services like
any other, with the actor "a/b stop rule", so the audit log says who changed the split; the verdict
itself is audited with its figures, and the tenant's owners are e-mailed.

Run by Celery beat every minute (`observability.tasks.ab_splits_check`).
Counting starts when the split was last changed (the route's updated_at).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from observability.ab import Verdict, decide, split_verdict
from routing.models import ModelRoute
from routing.services import model_routes_set
from tenants.audit import Actor, audit
from tenants.models import Membership, Role

logger = logging.getLogger(__name__)

ACTOR_LABEL = "a/b stop rule"


@dataclass(frozen=True, slots=True)
class Decision:
    tenant: str
    model: str
    variant: str
    winner: str  # "variant" | "control"
    score: str
    control_mean: float | None
    variant_mean: float | None
    p_value: float | None


def check_split_stops(tenant_id: int | None = None) -> list[Decision]:
    """Decide every split whose stop rule can conclude now (of one tenant, if given); the decisions made."""
    routes = ModelRoute.objects.exclude(split_model="").filter(split_stop_when__isnull=False).select_related("tenant")
    if tenant_id is not None:
        routes = routes.filter(tenant_id=tenant_id)
    decisions = []
    for route in routes:
        rule = route.split_stop_when or {}
        score = rule.get("score")
        if not score:
            continue
        verdict = split_verdict(route.tenant, route.model_name, route.split_model, since=route.updated_at)
        winner = decide(
            verdict, score, min_calls=int(rule.get("min_calls", 500)), significant=bool(rule.get("significant", True))
        )
        if winner:
            decisions.append(_apply(route, winner, score, verdict))
    return decisions


@transaction.atomic
def _apply(route: ModelRoute, winner: str, score: str, verdict: Verdict) -> Decision:
    tenant, model, variant = route.tenant, route.model_name, route.split_model
    settings = route.settings()
    split = settings["split"]
    settings["split"] = {"model": variant, "percent": 100.0, "sticky": split["sticky"]} if winner == "variant" else None
    actor = Actor(label=ACTOR_LABEL)
    model_routes_set(tenant, routes={model: settings}, actor=actor)
    metric = verdict.metric(f"score.{score}")
    c = metric.comparison if metric else None
    decision = Decision(
        tenant.slug,
        model,
        variant,
        winner,
        score,
        metric.control if metric else None,
        metric.variant if metric else None,
        c.p_value if c else None,
    )
    audit(
        tenant,
        actor=actor,
        action="routing.split.decided",
        target_type="model",
        target_label=model,
        changes={
            "variant": variant,
            "winner": winner,
            "score": score,
            "control": decision.control_mean,
            "variant_value": decision.variant_mean,
            "p_value": decision.p_value,
            "test": c.test if c else None,
            "scored_calls": {g.group: _scored(verdict, g.group, score) for g in verdict.groups},
            "decided_at": timezone.now().isoformat(),
        },
    )
    owners = list(
        Membership.objects.filter(tenant=tenant, role=Role.OWNER)
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )
    if owners:
        transaction.on_commit(lambda: _mail(decision, owners))
    return decision


def _scored(verdict: Verdict, group: str, score: str) -> int:
    values = verdict.scores.get(group, {}).get(score)
    return values.n if values is not None else 0


def _mail(decision: Decision, owners: list[str]) -> None:
    if decision.winner == "variant":
        outcome = f"{decision.variant} won: every call to {decision.model} now goes to {decision.variant}."
    else:
        outcome = f"The control group stays: the split of {decision.model} to {decision.variant} has ended."

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4g}"

    body = (
        f"The A/B split of {decision.model} ({decision.tenant}) has stopped itself by its rule on the score "
        f"{decision.score!r}.\n\n{outcome}\n\n"
        f"{decision.score}: control {fmt(decision.control_mean)}, variant {fmt(decision.variant_mean)}, "
        f"p = {fmt(decision.p_value)}.\n"
        "The audit log records the verdict; the A/B page shows the figures.\n"
    )
    try:
        send_mail(f"A/B split of {decision.model} decided: {decision.winner} wins", body, None, owners)
    except Exception:
        logger.exception("could not e-mail the A/B verdict for %s", decision.model)
