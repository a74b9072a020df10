"""The console flags deployments without a known price: their calls are logged without a cost, soft
budgets don't count them and hard budgets refuse them (model_unpriced), so an operator must see it on
the models list, the model page and where budgets are edited. Alice (acme) owns the models; Bob
(globex) never sees them.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from billing.models import PriceOverride
from routing.services import model_deployments_set
from tenants.audit import Actor

pytestmark = pytest.mark.usefixtures("console_defaults")

BADGE = "No known price: calls are logged without a cost; hard budgets refuse them (model_unpriced), soft ones don't count them"


@pytest.fixture
def finetune(world):
    mock = world.objects["provider"]
    model_deployments_set(
        world.acme, model_name="support-bot", deployments=[(mock, "ft:acme-support")], actor=Actor.cli()
    )
    return world


def _models_page(client, slug: str = "acme") -> str:
    return client.get(reverse("models", kwargs={"slug": slug})).content.decode()


def _model_page(client, name: str, slug: str = "acme"):
    return client.get(reverse("model-detail", kwargs={"slug": slug, "name": name}))


@pytest.mark.django_db
def test_alice_sees_the_badge_on_an_unpriced_deployment_only(finetune, client_as):
    client = client_as(finetune.alice)
    page = _models_page(client)
    assert page.count(BADGE) == 1  # the fine-tune; gpt-4o-mini's mock-chat has a shipped price
    row = page[page.index("support-bot") :]
    assert BADGE in row[: row.index("</tr>")]
    assert BADGE in _model_page(client, "support-bot").content.decode()
    assert BADGE not in _model_page(client, "gpt-4o-mini").content.decode()


@pytest.mark.django_db
def test_a_base_model_prices_the_deployment_and_removes_the_badge(finetune, client_as):
    mock = finetune.objects["provider"]
    model_deployments_set(
        finetune.acme,
        model_name="support-bot",
        deployments=[(mock, "ft:acme-support", None, "gpt-4o-mini")],
        actor=Actor.cli(),
    )
    client = client_as(finetune.alice)
    assert BADGE not in _models_page(client)
    assert BADGE not in _model_page(client, "support-bot").content.decode()


@pytest.mark.django_db
def test_a_negotiated_price_counts_as_a_known_price(finetune, client_as):
    PriceOverride.objects.create(tenant=finetune.acme, model="ft:acme-support", input=Decimal(1), output=Decimal(2))
    assert BADGE not in _models_page(client_as(finetune.alice))


@pytest.mark.django_db
def test_bob_cannot_see_alices_unpriced_model(finetune, client_as):
    bob = client_as(finetune.bob)
    assert _model_page(bob, "support-bot").status_code == 404
    assert _models_page(bob, "acme").count(BADGE) == 0


@pytest.mark.django_db
def test_the_budgets_page_lists_unpriced_models_and_what_hard_budgets_do_with_them(finetune, client_as):
    page = client_as(finetune.alice).get(reverse("budgets", kwargs={"slug": "acme"})).content.decode()
    section = page[page.index('id="unpriced-models"') :]
    section = section[: section.index("</section>")]
    assert "model_unpriced" in section and "support-bot" in section and "ft:acme-support" in section
    assert "gpt-4o-mini" not in section
    bobs = client_as(finetune.bob).get(reverse("budgets", kwargs={"slug": "globex"})).content.decode()
    assert "support-bot" not in bobs and 'id="unpriced-models"' not in bobs
