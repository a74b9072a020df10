"""The one shared, pooled HTTP client for upstream calls.

httpx's API over an aiohttp transport: measured on these machines, httpx's default transport cost
1.3-2.4 CPU ms more per proxied request (see tests/bench and shared/bench/README.md). The aiohttp
connector resolves names through GuardedResolver, so an upstream host that resolves to a private
address is refused at connect time, not only when the provider was saved. Redirects are never followed.
"""

from __future__ import annotations

import asyncio

import aiohttp
import httpx
from django.conf import settings
from httpx_aiohttp import AiohttpTransport

from gateway_project.common.netguard import GuardedResolver

_clients: dict[int, httpx.AsyncClient] = {}


def _session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=settings.GATEWAY_UPSTREAM_MAX_CONNECTIONS,
        limit_per_host=0,
        resolver=GuardedResolver(),
        ttl_dns_cache=30,
        keepalive_timeout=60,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",))


def get_client() -> httpx.AsyncClient:
    """The client for the running event loop (one per loop: aiohttp sessions are loop-bound)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(id(loop))
    if client is None or client.is_closed:
        transport = AiohttpTransport(client=_session)
        client = httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,
            timeout=httpx.Timeout(
                connect=settings.GATEWAY_UPSTREAM_CONNECT_TIMEOUT,
                read=settings.GATEWAY_UPSTREAM_READ_TIMEOUT,
                write=settings.GATEWAY_UPSTREAM_READ_TIMEOUT,
                pool=settings.GATEWAY_UPSTREAM_CONNECT_TIMEOUT,
            ),
            limits=httpx.Limits(max_connections=settings.GATEWAY_UPSTREAM_MAX_CONNECTIONS),
            trust_env=False,
        )
        _clients[id(loop)] = client
    return client


async def close_client() -> None:
    loop = asyncio.get_running_loop()
    client = _clients.pop(id(loop), None)
    if client is not None:
        await client.aclose()


async def read_and_close(response: httpx.Response) -> bytes:
    """The whole body of a streamed response the gateway will not relay (an error answer), with the
    connection released; empty when the connection fails while reading it."""
    try:
        return await response.aread()
    except httpx.HTTPError:
        return b""
    finally:
        await response.aclose()
