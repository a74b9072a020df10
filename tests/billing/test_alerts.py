"""Budget alert emails: exactly one per threshold and period, to the right people, with the numbers."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from django.core import mail

from billing.models import ALERT_REFUSED, BillingSettings, BudgetAlert
from billing.services import budget_alert_send, budget_upsert
from proxy import admission as money
from proxy.background import drain
from proxy.limits import BudgetCheck, limiter
from tenants.audit import Actor
from tenants.models import Membership, Role

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def eager_celery():
    from gateway_project.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


@pytest.fixture
def budget(acme, alice, bob, django_user_model):
    carol = django_user_model.objects.create_user(username="carol", email="carol@acme.test", password="x")
    Membership.objects.create(user=carol, tenant=acme, role=Role.ADMIN)
    dave = django_user_model.objects.create_user(username="dave", email="dave@acme.test", password="x")
    Membership.objects.create(user=dave, tenant=acme, role=Role.MEMBER)
    BillingSettings.objects.create(tenant=acme, timezone="Europe/Berlin", alert_emails=["finance@acme.test"])
    budget, _ = budget_upsert(
        acme, scope="tenant", limit_usd=Decimal("10"), period="month", mode="hard", actor=Actor.cli()
    )
    return budget


def test_one_email_per_threshold_and_period(budget):
    assert budget_alert_send(budget_id=budget.id, period_key="2026-11", threshold=50, spent_nanos=5_100_000_000)
    assert not budget_alert_send(budget_id=budget.id, period_key="2026-11", threshold=50, spent_nanos=5_200_000_000)
    assert budget_alert_send(budget_id=budget.id, period_key="2026-11", threshold=80, spent_nanos=8_000_000_000)
    assert budget_alert_send(budget_id=budget.id, period_key="2026-12", threshold=50, spent_nanos=5_000_000_000)
    assert len(mail.outbox) == 3
    assert BudgetAlert.objects.count() == 3


def test_the_email_goes_to_owners_admins_and_configured_addresses_with_the_numbers(budget):
    budget_alert_send(budget_id=budget.id, period_key="2026-11", threshold=80, spent_nanos=8_123_400_000)
    (message,) = mail.outbox
    assert sorted(message.to) == ["alice@acme.test", "carol@acme.test", "finance@acme.test"]
    assert "bob@globex.test" not in message.to and "dave@acme.test" not in message.to
    assert "80%" in message.subject
    assert "8.12 USD" in message.body and "10.00 USD" in message.body
    html, mimetype = message.alternatives[0]
    assert mimetype == "text/html"
    assert "8.12 USD" in html and "/t/acme/budgets/" in html
    assert "Top keys" in message.body and "Top models" in message.body


def test_crossing_thresholds_while_settling_sends_each_alert_once(budget):
    check = BudgetCheck(
        budget_id=budget.id,
        key=f"gw:b:{budget.id}:test-period",
        limit_nanos=10_000_000_000,
        hard=True,
        alert_at=(50, 80, 100),
        scope="tenant",
        period_key="test-period",
    )

    asyncio.run(limiter().seed(check.key, 0, [], 0))  # as admission does from the ledger for a new period

    async def spend(nanos: int) -> None:
        _admission, reservation = await limiter().admit(f"r{nanos}", [], 0, None, [check], 1_000_000)
        await money.settle(reservation, 0, nanos)
        await drain()

    async def scenario() -> list[int]:
        sent = []
        for nanos in (4_000_000_000, 2_000_000_000, 1_000_000_000, 2_500_000_000, 1_000_000_000):
            await spend(nanos)
            sent.append(len(mail.outbox))
        return sent

    # 4 (40%), 6 (60%: 50 crossed), 7 (70%), 9.5 (95%: 80 crossed), 10.5 (105%: 100 crossed)
    assert asyncio.run(scenario()) == [0, 1, 1, 2, 3]
    assert sorted(BudgetAlert.objects.values_list("threshold", flat=True)) == [50, 80, 100]


@pytest.mark.parametrize("backend", ["redis", "local"])
def test_a_refused_request_reports_the_real_spend_and_alerts_once(budget, backend):
    from proxy.limits import LocalLimiter

    lim = limiter() if backend == "redis" else LocalLimiter()
    check = BudgetCheck(
        budget_id=budget.id,
        key=f"gw:b:{budget.id}:refusal-{backend}",
        limit_nanos=10_000_000_000,
        hard=True,
        alert_at=(50, 80, 100),
        scope="tenant",
        period_key=f"refusal-{backend}",
    )

    async def scenario():
        await lim.seed(check.key, 0, [], 0)
        _ok, reservation = await lim.admit("a", [], 0, None, [check], 9_500_000_000)
        await lim.settle(reservation, 0, 9_500_000_000)
        denied, none = await lim.admit("b", [], 0, None, [check], 1_000_000_000)
        for _ in range(5):  # a refused burst queues one alert, not five
            await money._alert(check, 100, denied.spent_nanos)
        await drain()
        return denied, none

    denied, reservation = asyncio.run(scenario())
    assert reservation is None and not denied.ok and denied.reason == "budget"
    assert denied.spent_nanos == 9_500_000_000
    # 50 % and 80 % were never mailed (the spend was settled behind money.settle's back): they go along,
    # in the same e-mail.
    (message,) = mail.outbox
    assert "budget at 100%" in message.subject and "past 50% and 80% too" in message.subject
    assert (
        "9.50 USD" in message.body and "now refused" in message.body and "It passed 50%, 80% on the way" in message.body
    )


@pytest.mark.parametrize("backend", ["redis", "local"])
def test_a_missing_budget_counter_asks_to_be_seeded_and_settling_never_recreates_it(budget, backend):
    from proxy.limits import LocalLimiter

    lim = limiter() if backend == "redis" else LocalLimiter()
    check = BudgetCheck(budget.id, f"gw:b:{budget.id}:seed-{backend}", 10_000, True, (100,), "tenant", "p")

    async def scenario():
        first, none = await lim.admit("a", [], 0, None, [check], 10)
        await lim.seed(check.key, 9_000, [], 0)  # the ledger already holds 9 µUSD this period
        admitted, reservation = await lim.admit("b", [], 0, None, [check], 2_000)
        return first, none, admitted, reservation

    first, none, admitted, reservation = asyncio.run(scenario())
    assert (first.ok, first.reason, none) == (False, "seed", None)
    # 9000 spent + 2000 reserved > 10000: the seeded spend counts, the request is refused.
    assert not admitted.ok and admitted.reason == "budget" and admitted.spent_nanos == 9_000
    assert reservation is None


def test_an_alert_whose_mail_failed_is_sent_on_the_retry_and_only_then(budget, monkeypatch):
    from django.core.mail import EmailMultiAlternatives

    real_send = EmailMultiAlternatives.send

    def broken(self, *args, **kwargs):
        raise ConnectionRefusedError("SMTP down")

    monkeypatch.setattr(EmailMultiAlternatives, "send", broken)
    with pytest.raises(ConnectionRefusedError):
        budget_alert_send(budget_id=budget.id, period_key="2026-11", threshold=50, spent_nanos=5_000_000_000)
    monkeypatch.setattr(EmailMultiAlternatives, "send", real_send)
    assert budget_alert_send(budget_id=budget.id, period_key="2026-11", threshold=50, spent_nanos=5_000_000_000)
    assert not budget_alert_send(budget_id=budget.id, period_key="2026-11", threshold=50, spent_nanos=5_000_000_000)
    assert len(mail.outbox) == 1


def test_thresholds_crossed_by_one_call_go_out_as_one_email_and_each_only_once(budget):
    from billing.services import budget_alerts_send

    assert budget_alerts_send(budget_id=budget.id, period_key="2026-11", thresholds=[50, 80], spent_nanos=8_500_000_000)
    (message,) = mail.outbox
    assert "budget at 80%" in message.subject and "past 50% too" in message.subject
    assert not budget_alerts_send(
        budget_id=budget.id, period_key="2026-11", thresholds=[50, 80], spent_nanos=8_600_000_000
    )
    assert sorted(BudgetAlert.objects.filter(sent_at__isnull=False).values_list("threshold", flat=True)) == [50, 80]


def test_the_first_refused_call_mails_calls_refused_once_per_period_whatever_the_share_spent(budget):
    """A hard budget at 73 % refuses a call whose worst case does not fit: the owners hear that calls are
    refused (once), even though no 100 % threshold was crossed."""
    check = BudgetCheck(
        budget_id=budget.id,
        key=f"gw:b:{budget.id}:refused",
        limit_nanos=10_000_000_000,
        hard=True,
        alert_at=(50, 80, 100),
        scope="tenant",
        period_key="refused",
    )

    async def scenario():
        for _ in range(3):  # a refused burst, and again later in the period: one e-mail
            await money._alert(check, ALERT_REFUSED, 7_300_000_000)
        money._queued.clear()  # another process, or this one after a restart
        await money._alert(check, ALERT_REFUSED, 7_400_000_000)
        await drain()

    asyncio.run(scenario())
    (message,) = mail.outbox
    assert "budget exhausted, calls refused" in message.subject and "7.30 of 10.00 USD" in message.subject
    assert "now refused" in message.body and "It passed 50% on the way" in message.body
    assert BudgetAlert.objects.get(threshold=ALERT_REFUSED).sent_at is not None
