"""A lean Django ASGI handler for the proxy paths (/v1/...).

Django's stock ASGIHandler sends request_started/request_finished signals through sync_to_async
(two thread hops per request, to close stale database connections) and runs the console's
middleware stack. The proxy uses no synchronous database connection and authenticates itself, so
this handler resolves and calls the same Django views without either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import RequestAborted, RequestDataTooBig
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.urls import set_script_prefix

from proxy.errors import ProxyError
from proxy.relay import GatewayStreamResponse

# The proxy's routes first, the console's imported only when needed.
PROXY_URLCONF = "proxy.handler_urls"


class ProxyHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        # Async in, async out: convert_exception_to_response keeps a coroutine function one.
        self._middleware_chain = cast(
            "Callable[[Any], Awaitable[Any]]",
            convert_exception_to_response(
                self._get_response_async  # type: ignore[attr-defined]  # BaseHandler's private coroutine, not in django-stubs
            ),
        )

    async def get_response_async(self, request: Any) -> Any:
        # Django's version logs every 4xx/5xx through sync_to_async (a thread hop); the proxy records
        # its errors in the call log instead.
        # Django's resolve_request resolves with the request's own urlconf, and sets it for reverse().
        request.urlconf = PROXY_URLCONF
        return await self._middleware_chain(request)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await self.handle(scope, receive, send)

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        limit = settings.GATEWAY_MAX_BODY_BYTES
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                # Refuse before reading: an oversized body is never spooled to disk.
                await self.send_response(_too_large(limit), send)
                return
        try:
            # A client that trickles its body (slowloris) does not hold a connection and a buffer for
            # ever: the whole body has GATEWAY_BODY_READ_TIMEOUT seconds to arrive.
            async with asyncio.timeout(settings.GATEWAY_BODY_READ_TIMEOUT):
                body_file = await self.read_body(receive)
        except RequestAborted:
            return
        except RequestDataTooBig:
            await self.send_response(_too_large(limit), send)
            return
        except TimeoutError:
            timeout = settings.GATEWAY_BODY_READ_TIMEOUT
            message = f"The request body did not arrive within {timeout:g} s (GATEWAY_BODY_READ_TIMEOUT)."
            await self.send_response(ProxyError(408, message, code="request_timeout").response(), send)
            return
        with body_file:
            set_script_prefix(scope.get("root_path", "") or "/")
            request, error_response = self.create_request(scope, body_file)
            if request is None:
                assert error_response is not None  # create_request returns one or the other
                # Django's own answers here are plain text; the API answers in OpenAI's format.
                status = error_response.status_code
                await self.send_response(
                    ProxyError(status, "The request could not be read.", code="invalid_request").response()
                    if status != 413
                    else _too_large(limit),
                    send,
                )
                return
            response = None
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self.listen_for_disconnect(receive))
                    response = await self.run_get_response(request)
                    await self.send_response(response, send)
                    raise _Done
            except* (_Done, RequestAborted):
                pass

    async def read_body(self, receive: Any) -> Any:
        """Django's read_body, stopping as soon as a chunked body passes the size limit."""
        limit = settings.GATEWAY_MAX_BODY_BYTES
        seen = 0

        async def counting_receive() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise RequestDataTooBig()
            return message

        return await super().read_body(counting_receive)

    async def send_response(self, response: Any, send: Any) -> None:
        # Every /v1/ answer (JSON, stream, error) passes here; the console's SecurityMiddleware does
        # this for the other pages, but the proxy runs no middleware.
        response["X-Content-Type-Options"] = "nosniff"
        if not isinstance(response, GatewayStreamResponse):
            await super().send_response(response, send)
            return
        completed = False
        try:
            headers = [(k.encode("ascii"), v.encode("latin1")) for k, v in response.items()]
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            # Iterate our own generator (not Django's wrapper around it) so that a disconnect closes it
            # right away: that cancels the upstream request and logs the call.
            async with aclosing(response.events) as events:
                async for event in events:
                    await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            completed = True
        finally:
            # Closing an async generator that never started does not run its cleanup: do it here
            # (idempotent when the generator already did).
            await response.close_relay(disconnected=not completed)


class _Done(Exception):
    pass


def _too_large(limit: int) -> Any:
    return ProxyError(413, f"The request body is larger than {limit} bytes.", code="request_too_large").response()
