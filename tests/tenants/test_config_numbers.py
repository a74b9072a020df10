"""Numbers in `gateway apply` and `gateway mint-key` must fit the columns they are stored in, and key
budgets must name a key that exists: a clear error with the line and field path, nothing changed."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.models import Budget, PriceOverride, RateLimit
from tenants.models import Tenant, VirtualKey

pytestmark = pytest.mark.django_db

ACME = """\
tenant: acme
name: Acme Corp
providers:
  - name: local
    kind: mock
models:
  - name: gpt-4o-mini
    deployments:
      - provider: local
        model: mock-chat
"""


def apply(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tenant.yaml"
    path.write_text(text)
    out = io.StringIO()
    call_command("gateway", "apply", str(path), stdout=out)
    return out.getvalue()


def apply_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(CommandError) as info:
        apply(tmp_path, text)
    return str(info.value)


def gateway_error(*args: str) -> str:
    with pytest.raises(CommandError) as info:
        call_command("gateway", *args, stdout=io.StringIO())
    return str(info.value)


@pytest.fixture
def acme(tmp_path) -> Tenant:
    apply(tmp_path, ACME + "limits:\n  tenant: {rpm: 100, tpm: 1000}\n")
    return Tenant.objects.get(slug="acme")


@pytest.mark.parametrize(
    ("section", "line", "path"),
    [
        ("limits:\n  tenant: {rpm: 100000000, tpm: 10000000000}\n", 12, "limits.tenant.tpm"),
        ("limits:\n  tenant:\n    rpm: 2147483648\n", 13, "limits.tenant.rpm"),
        (
            "limits:\n  deployments:\n    - model: gpt-4o-mini\n      provider: local\n      tpm: 99999999999\n",
            15,
            "limits.deployments[0].tpm",
        ),
        ("budgets:\n  - scope: tenant\n    limit_usd: 10000000000000\n", 13, "budgets[0].limit_usd"),
        (
            "budgets:\n  - scope: tenant\n    limit_usd: 5\n    alert_at: [50, 99999999999]\n",
            14,
            "budgets[0].alert_at[1]",
        ),
        ("prices:\n  - model: gpt-4o-mini\n    input: 1\n    output: 1e13\n", 14, "prices[0].output"),
        (
            "prices:\n  - model: gpt-4o-mini\n    input: 1\n    output: 2\n    cache_write: 1000000000000\n",
            15,
            "prices[0].cache_write",
        ),
    ],
)
def test_numbers_beyond_a_column_are_refused_with_line_and_path(tmp_path, acme, section, line, path):
    before = list(RateLimit.objects.values_list("scope", "rpm", "tpm"))
    message = apply_error(tmp_path, ACME + section)
    assert f"line {line}, {path}:" in message
    assert "at most" in message
    # Nothing changed: the tenant's limits are still those of the fixture, no budget or price was added.
    assert list(RateLimit.objects.values_list("scope", "rpm", "tpm")) == before
    assert not Budget.objects.exists() and not PriceOverride.objects.exists()


def test_the_largest_numbers_that_fit_are_accepted(tmp_path, acme):
    apply(
        tmp_path,
        ACME
        + "limits:\n  tenant: {rpm: 2147483647, tpm: 2147483647}\n"
        + 'budgets:\n  - scope: tenant\n    limit_usd: "999999999999.999999"\n'
        + "prices:\n  - model: gpt-4o-mini\n    input: 999999999999\n    output: 0.000001\n",
    )
    limit = RateLimit.objects.get(tenant=acme, scope="tenant")
    assert (limit.rpm, limit.tpm) == (2147483647, 2147483647)
    assert str(Budget.objects.get(tenant=acme).limit_usd) == "999999999999.999999"


def test_a_budget_for_a_key_that_does_not_exist_is_refused(tmp_path, acme):
    message = apply_error(
        tmp_path, ACME + "budgets:\n  - scope: tenant\n    limit_usd: 5\n  - scope: key:ghost\n    limit_usd: 1\n"
    )
    assert "line 14, budgets[1].scope:" in message and "no key named 'ghost'" in message
    assert not Budget.objects.exists()


def test_a_budget_for_an_existing_key_is_applied(tmp_path, acme):
    call_command("gateway", "mint-key", "--tenant", "acme", "--name", "ci", stdout=io.StringIO())
    out = apply(tmp_path, ACME + "budgets:\n  - scope: key:ci\n    limit_usd: 1\n")
    assert "~ budget key:ci/month" in out
    assert Budget.objects.filter(tenant=acme, scope="key:ci").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--tpm", "10000000000"), "--tpm must be at most 2147483647"),
        (("--rpm", "2147483648"), "--rpm must be at most 2147483647"),
        (("--max-parallel", "99999999999"), "--max-parallel must be at most 2147483647"),
        (("--budget", "10000000000000"), "--budget"),
        (("--budget", "0.0000001"), "--budget"),
    ],
)
def test_mint_key_refuses_numbers_beyond_a_column(acme, args, message):
    error = gateway_error("mint-key", "--tenant", "acme", "--name", "ci", *args)
    assert message in error
    assert not VirtualKey.objects.filter(name="ci").exists()
