"""The live call log socket, /ws/logs/: each finished call of one tenant, as it is flushed.

Who: a signed-in console user (session cookie; AuthMiddlewareStack), from the console's own origin
(PUBLIC_URL's scheme, host and port exactly: PublicOriginValidator in gateway_project.asgi). The tenant is the one named in the query
string (`?tenant=<slug>`, what the live page asks for), else the user's current tenant in the session
(set by the live page), else their only or first tenant. Everything is checked before `accept()`: an
anonymous socket, a non-member or a role without `view` is refused, with no event ever sent.

What: members of the tenant get its calls (one channel-layer group per tenant, observability.live);
a `member` only the calls of their own keys, like everywhere else in the console
(tenants.permissions.visible_keys). Membership is checked again every RECHECK_SECONDS, so a person
removed from the tenant stops receiving its calls (checked by a small task per socket, which also renews
the socket's presence, observability.live.watch).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from observability import live
from observability.live import group_name
from tenants.audit import Actor
from tenants.models import Membership, Role, VirtualKey
from tenants.permissions import VIEW, TenantAccess, visible_keys

logger = logging.getLogger("gateway.logs")

# The live page stores the tenant it shows here; the socket falls back to it.
SESSION_TENANT = "gateway_current_tenant"
RECHECK_SECONDS = 30.0
# A call from a key the socket does not know yet (created after it connected) reloads the key list,
# at most this often.
KEY_RELOAD_SECONDS = 1.0

# Close codes (before accept the handshake is refused with HTTP 403 whatever the code).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


@dataclass(frozen=True)
class Watch:
    """What one socket may see: a tenant, and for a member only their own keys."""

    tenant_id: int
    slug: str
    role: str
    key_names: dict[int, str]
    # None: every key of the tenant; otherwise the ids of the keys whose calls this person sees.
    visible: frozenset[int] | None


def _watch(user_id: int, slug: str | None) -> Watch | None:
    memberships = Membership.objects.filter(user_id=user_id).select_related("tenant")
    if slug:
        membership = memberships.filter(tenant__slug=slug).first()
    else:
        membership = memberships.order_by("tenant__name").first()
    if membership is None:
        return None
    access = TenantAccess(tenant=membership.tenant, role=membership.role, actor=Actor(), user_id=user_id)
    if not access.can(VIEW):
        return None
    names = dict(VirtualKey.objects.filter(tenant=membership.tenant).values_list("id", "name"))
    # Members see their own keys' calls (visible_keys); every other role the whole tenant's.
    own = frozenset(visible_keys(access).values_list("id", flat=True)) if membership.role == Role.MEMBER else None
    return Watch(membership.tenant_id, membership.tenant.slug, membership.role, names, own)


watch_for = database_sync_to_async(_watch)


@database_sync_to_async
def _session_tenant(session: Any) -> str | None:
    # Reading the session may query the database: off the event loop.
    return session.get(SESSION_TENANT) if session is not None else None


class LiveLogsConsumer(AsyncJsonWebsocketConsumer):
    watch: Watch | None = None
    _renewal: asyncio.Task | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        slug = (query.get("tenant") or [None])[0] or await _session_tenant(self.scope.get("session"))
        watch = await watch_for(user.id, slug)
        if watch is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.user_id = user.id
        self.watch = watch
        self.keys_loaded_at = time.monotonic()
        await self.channel_layer.group_add(group_name(watch.tenant_id), self.channel_name)
        await sync_to_async(live.watch, thread_sensitive=False)(watch.tenant_id, self.channel_name)
        await self.accept()
        self._renewal = asyncio.get_running_loop().create_task(self._renew_forever())
        await self.send_json(
            {
                "type": "hello",
                "tenant": watch.slug,
                "keys": sorted(
                    (name for kid, name in watch.key_names.items() if watch.visible is None or kid in watch.visible),
                    key=str.lower,
                ),
            }
        )

    async def disconnect(self, code: int) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
        if self.watch is not None:
            await self.channel_layer.group_discard(group_name(self.watch.tenant_id), self.channel_name)
            await sync_to_async(live.unwatch, thread_sensitive=False)(self.watch.tenant_id, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        # Filters and pause live in the page; the socket only answers a keep-alive.
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def calllog_batch(self, message: dict[str, Any]) -> None:
        watch = self.watch
        if watch is None:
            return
        now = time.monotonic()
        if now - self.keys_loaded_at > KEY_RELOAD_SECONDS and any(
            e.get("key_id") not in watch.key_names for e in message["events"]
        ):
            watch = await self._reload(now)
            if watch is None:
                return
        calls = []
        for event in message["events"]:
            key_id = event.get("key_id")
            if watch.visible is not None and key_id not in watch.visible:
                continue
            calls.append({**event, "key": watch.key_names.get(key_id) or f"key #{key_id}"})
        if calls:
            await self.send_json({"type": "calls", "calls": calls})

    async def _renew_forever(self) -> None:
        # Whether calls arrive or not: membership re-checked, presence and group membership renewed.
        while self.watch is not None:
            await asyncio.sleep(RECHECK_SECONDS)
            try:
                await self._reload(time.monotonic())
            except Exception:
                logger.exception("renewing a live log socket failed")

    async def _reload(self, now: float) -> Watch | None:
        if self.watch is None:
            return None  # closed meanwhile
        watch = await watch_for(self.user_id, self.watch.slug)
        if watch is None or watch.tenant_id != self.watch.tenant_id:
            # Removed from the tenant (or lost the right to view it) while watching.
            await self.channel_layer.group_discard(group_name(self.watch.tenant_id), self.channel_name)
            await sync_to_async(live.unwatch, thread_sensitive=False)(self.watch.tenant_id, self.channel_name)
            self.watch = None
            await self.close(code=CLOSE_FORBIDDEN)
            return None
        self.watch = watch
        self.keys_loaded_at = now
        # Group membership expires in the channel layer after a day, the presence entry after WATCH_TTL:
        # renew both with each check.
        await self.channel_layer.group_add(group_name(watch.tenant_id), self.channel_name)
        await sync_to_async(live.watch, thread_sensitive=False)(watch.tenant_id, self.channel_name)
        return watch
