"""Money shown to people: short, exact Decimal rounding, and never a non-zero amount shown as zero."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core import mail
from django.template import Context, Template

from billing.display import display_usd
from billing.models import BudgetAlert
from billing.services import budget_upsert
from billing.tasks import send_budget_alert
from tenants.audit import Actor


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        ("0", "0.00"),
        ("12.345", "12.35"),
        ("1234.5", "1,234.50"),
        ("0.01", "0.01"),
        ("0.0042", "0.0042"),
        ("0.0002", "0.0002"),
        ("0.00005", "0.00005"),
        ("0.0000523", "0.000052"),
        ("0.000000000001", "0.000000000001"),
        ("0.009999", "0.01"),
        ("-0.00004", "-0.00004"),
    ],
)
def test_amounts_keep_two_significant_digits_below_a_cent(amount, shown):
    assert display_usd(Decimal(amount)) == shown


def test_a_non_zero_amount_is_never_shown_as_zero():
    for exponent in range(2, 13):
        amount = Decimal(1).scaleb(-exponent) * 3
        assert Decimal(display_usd(amount)) != 0, amount


def test_the_usd_filter_uses_the_same_rounding():
    out = Template("{% load money %}{{ a|usd }} {{ b|usd }} {{ c|usd }}").render(
        Context({"a": Decimal("0.00004"), "b": Decimal("3.456"), "c": None})
    )
    assert out == "$0.00004 $3.46 "


def _alert_mails() -> list:
    # The world's invitations are in the outbox too.
    return [m for m in mail.outbox if "budget at" in m.subject]


@pytest.fixture
def eager_celery():
    from gateway_project.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


@pytest.mark.django_db(transaction=True)
def test_an_alert_for_a_tiny_budget_shows_its_amounts(world, eager_celery):
    # Alice tries budgets with a 0.0002 USD day budget; 80 % of it is 0.00016 USD.
    budget, _ = budget_upsert(
        world.acme, scope="tenant", limit_usd=Decimal("0.0002"), period="day", mode="hard", actor=Actor.cli()
    )
    send_budget_alert.delay(budget_id=budget.id, period_key="2026-11-02", threshold=80, spent_nanos=160_000)
    subjects = [m.subject for m in _alert_mails()]
    # 80 % spent has passed 50 % too: one e-mail says both.
    assert subjects[-1] == "[Acme Corp] tenant budget at 80% (0.00016 of 0.0002 USD, past 50% too)"
    assert "0.00016 USD" in _alert_mails()[-1].body and "0.0002 USD" in _alert_mails()[-1].body


@pytest.mark.django_db(transaction=True)
def test_thresholds_crossed_at_once_are_mailed_in_one_email(world, eager_celery):
    budget, _ = budget_upsert(
        world.acme, scope="tenant", limit_usd=Decimal("10"), period="month", mode="hard", actor=Actor.cli()
    )
    # One call took Alice's tenant from 40 % to 85 %: the proxy queues the 80 % task and the 50 % task,
    # and a worker may well run the 80 % one first.
    send_budget_alert.delay(budget_id=budget.id, period_key="2026-11", threshold=80, spent_nanos=8_500_000_000)
    send_budget_alert.delay(budget_id=budget.id, period_key="2026-11", threshold=50, spent_nanos=8_500_000_000)
    (mail,) = _alert_mails()  # whichever task runs first mails both; the other finds them sent
    assert "budget at 80%" in mail.subject and "past 50% too" in mail.subject
    assert sorted(BudgetAlert.objects.exclude(sent_at=None).values_list("threshold", flat=True)) == [50, 80]


@pytest.mark.django_db(transaction=True)
def test_a_threshold_the_spend_has_not_reached_is_not_mailed_early(world, eager_celery):
    budget, _ = budget_upsert(
        world.acme, scope="tenant", limit_usd=Decimal("10"), period="month", mode="hard", actor=Actor.cli()
    )
    send_budget_alert.delay(budget_id=budget.id, period_key="2026-11", threshold=50, spent_nanos=5_000_000_000)
    (only,) = _alert_mails()
    assert "at 50%" in only.subject
