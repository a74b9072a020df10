"""A call the gateway makes to one of the tenant's own models on a call's behalf (a guardrail's judge, its
moderation endpoint or its embedding model).

It goes through the gateway as a call of its own, without the HTTP hop: routed (rules aside: the check
names the model it wants), admitted (the key's and tenant's limits, every budget that applies), attempted
with the model's retries and fallbacks, and logged and billed to the tenant under the parent's key with
the tag given, so a tenant sees what its guardrails cost. No policy step runs on it: it reads what the
steps already made of the parent's request (redacted, never raw personal data), and a guardrail's own
call is never checked in turn.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from proxy import router
from proxy.attempts import admit_planned, run
from proxy.call import Call
from proxy.errors import ProxyError
from proxy.providers import adapter_for
from proxy.providers.base import CallContext, UpstreamResult


class SubcallError(Exception):
    """The model could not answer (not configured, refused, failed): the check's `fail` decides."""


async def model_call(parent: Call, model: str, endpoint: str, payload: dict[str, Any], *, tag: str) -> dict[str, Any]:
    """The model's JSON answer. The caller bounds the time (asyncio.timeout); a cancelled call is logged as
    a 499 like a client's."""
    tenant, key = parent.tenant, parent.key
    if tenant is None or key is None:
        raise SubcallError("no tenant")
    if model not in tenant.routes:
        raise SubcallError(f"the model {model!r} is not one of this tenant's")
    call = Call(parent.request_id, endpoint, time.perf_counter())
    call.key, call.tenant, call.model, call.tags = key, tenant, model, [tag]
    call.payload = payload = {**payload, "model": model}
    body = orjson.dumps(payload)
    call.prompt_estimate = len(body) // 3 + 1
    try:
        plan = router.plan(tenant, key, model, tags=call.tags, prompt_bytes=len(body))
        if any(endpoint not in adapter_for(d.kind).endpoints for d in plan.deployments()):
            raise SubcallError(f"a deployment of {model!r} does not serve /{endpoint}")
        call.variant = plan.variant or ""
        await admit_planned(call, plan, payload, body, hold_s=plan.timeout_s)
        ctx = CallContext(request_id=call.request_id, endpoint=endpoint, stream=False, started=call.started)
        result = await run(call, plan, payload, ctx, call.started + plan.timeout_s)
        if not isinstance(result, UpstreamResult):
            raise SubcallError("a stream answered a call that asked for none")
    except ProxyError as exc:
        call.status, call.error_type, call.error_message = exc.status, exc.code or exc.type, exc.message
        call.finish()
        raise SubcallError(exc.message) from exc
    except asyncio.CancelledError:
        call.status, call.error_type, call.disconnected = 499, "guardrail_timeout", True
        call.finish()
        raise
    except SubcallError as exc:
        call.status, call.error_type, call.error_message = 400, "invalid_request_error", str(exc)
        call.finish()
        raise
    call.ttfb = time.perf_counter()
    call.status = result.status
    call.set_usage(result.usage)
    call.error_type, call.error_message = result.error_type, result.error_message
    if call.prompt_tokens is None and result.status < 400:
        call.content_events = len(result.body) // 4 + 1
    call.finish()
    if result.status >= 400:
        raise SubcallError(f"{model!r} answered {result.status}")
    try:
        answer = orjson.loads(result.body)
    except orjson.JSONDecodeError as exc:
        raise SubcallError(f"{model!r} answered with a body that is not JSON") from exc
    if not isinstance(answer, dict):
        raise SubcallError(f"{model!r} answered with a body that is not a JSON object")
    return answer
