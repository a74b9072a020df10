"""The key LLM-judge evaluators call the gateway with: one per tenant, named `evaluator`, tagged
`evaluator` (its calls are logged and billed like any other, and never evaluated in turn). Made on first
use; a revoked one is replaced. Its secret is kept encrypted, for the worker that sends the calls."""

from __future__ import annotations

from django.db import transaction

from observability.keyslots import held_key
from observability.models import JudgeKey
from tenants.audit import Actor
from tenants.models import Tenant
from tenants.services import virtual_key_create

KEY_NAME = "evaluator"


@transaction.atomic
def judge_key(tenant: Tenant) -> str:
    """The secret of the tenant's judge key, minted when there is no usable one."""
    row, _ = JudgeKey.objects.select_for_update().get_or_create(tenant=tenant)
    _key, secret = held_key(
        row,
        usable=lambda key: key.is_active,
        mint=lambda: virtual_key_create(
            tenant, name=KEY_NAME, actor=Actor(label="evaluators"), metadata={"tags": ["evaluator"]}
        ),
    )
    return secret
