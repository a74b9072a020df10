"""The live call log socket under a real gateway (granian, as `make run` and `make serve` start it)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import httpx
import pytest
from django.conf import settings
from django.test import Client

pytestmark = pytest.mark.django_db(transaction=True)

# Longer than one blocking wait of the Redis channel layer (5 s), twice over.
QUIET_SECONDS = 11.0


def test_an_idle_socket_stays_open_and_then_shows_the_next_call(alice, acme, mint, gateway_factory):
    """Nobody calls for a while: the socket stays open (no close, no traceback in the server's log), and
    the next call still reaches it. It used to close after 5 to 15 s: the Redis channel layer's reads
    timed out during its own 5 s blocking wait for a message, and the consumer died."""
    secret = mint(acme, name="web")
    server = gateway_factory()
    client = Client()
    client.force_login(alice)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"

    async def go() -> tuple[float | None, list[dict]]:
        async with aiohttp.ClientSession() as http:
            url = f"ws://127.0.0.1:{server.port}/ws/logs/?tenant=acme"
            # The Origin the console's own pages send: PUBLIC_URL (PublicOriginValidator).
            async with http.ws_connect(url, origin=settings.PUBLIC_URL, headers={"cookie": cookie}) as ws:
                assert (await ws.receive_json(timeout=5))["type"] == "hello"
                opened = time.monotonic()
                try:
                    message = await ws.receive(timeout=QUIET_SECONDS)
                except TimeoutError:
                    pass  # quiet, and still open
                else:
                    return time.monotonic() - opened, [{"unexpected": message.type.name, "code": ws.close_code}]

                async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
                    response = await api.post(
                        "/v1/chat/completions",
                        headers={"authorization": f"Bearer {secret}"},
                        json={"model": "local", "messages": [{"role": "user", "content": "hi"}]},
                    )
                assert response.status_code == 200, response.text
                message = await ws.receive_json(timeout=5)
                assert message["type"] == "calls"
                return None, message["calls"]

    closed_after, calls = asyncio.run(go())
    assert closed_after is None, f"the idle socket closed after {closed_after:.1f} s: {calls}\n{server.log()}"
    assert [(c["key"], c["model"], c["status"]) for c in calls] == [("web", "local", 200)]
    assert "Traceback" not in server.log()
