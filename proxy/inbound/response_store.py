"""Stored Responses API answers, as the proxy sees them: ids, keeping an answer, reading one back.

An answer is kept with its call's log row (observability.stored_responses writes it in the same
transaction), so it reaches the database a flush or two after the client has it: through the Redis
stream and its consumer, up to a few seconds. A client that continues at once (a tool round trip)
must not get a 404 for that, whichever gateway process it reaches:
- the process that answered remembers its own recent answers for that long (`_recent`);
- any other process waits for the row, but only for an id younger than GATEWAY_RESPONSE_STORE_WAIT:
  ids carry their creation time, so an unknown or old id is a 404 at once.

Reads are tenant-scoped: a key never sees another tenant's responses. They are the only database reads
on a call's path, made only by requests that name a stored response, through Django's async ORM.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

from django.conf import settings

from gateway_project.common.ids import id_age_s, timed_id
from observability.stored_responses import adelete_stored_response, astored_response
from proxy.errors import ProxyError

RECENT_MAX = 2000
# (tenant id, response id) -> (monotonic expiry, stored fields)
_recent: OrderedDict[tuple[int, str], tuple[float, dict[str, Any]]] = OrderedDict()


def new_response_id() -> str:
    """`resp_` + the creation time in milliseconds (12 hex digits) + 96 random bits."""
    return timed_id("resp", 12)


def not_found(response_id: str, param: str | None = None) -> ProxyError:
    return ProxyError(
        404,
        f"No response with id {response_id[:100]!r} is stored for this key's tenant (it was never stored, "
        "was deleted, or is past the tenant's log retention).",
        param=param,
        code="response_not_found",
    )


def remember(tenant_id: int, stored: dict[str, Any]) -> None:
    _recent[(tenant_id, stored["id"])] = (time.monotonic() + settings.GATEWAY_RESPONSE_STORE_WAIT, stored)
    while len(_recent) > RECENT_MAX:
        _recent.popitem(last=False)


def forget(tenant_id: int, response_id: str) -> None:
    _recent.pop((tenant_id, response_id), None)


async def load(tenant_id: int, response_id: str, *, stored_only: bool = False) -> dict[str, Any] | None:
    """The stored fields (response, input_items, messages, ...), or None. `stored_only`: the database
    row itself, waited for when young (what a delete must remove)."""
    entry = None if stored_only else _recent.get((tenant_id, response_id))
    if entry is not None:
        if entry[0] >= time.monotonic():
            return entry[1]
        del _recent[(tenant_id, response_id)]  # in the database by now
    wait = settings.GATEWAY_RESPONSE_STORE_WAIT
    while True:
        row = await astored_response(tenant_id, response_id)
        if row is not None:
            return row
        age = id_age_s(response_id, "resp")
        if age is None or not -1.0 <= age <= wait:
            return None
        await asyncio.sleep(0.1)


async def delete(tenant_id: int, response_id: str) -> bool:
    forget(tenant_id, response_id)
    if await load(tenant_id, response_id, stored_only=True) is None:
        return False
    return await adelete_stored_response(tenant_id, response_id)
