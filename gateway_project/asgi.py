"""The ASGI entry point: proxy, console and websockets, plus lifespan for clean shutdown.

/v1/ goes to the lean ProxyHandler (no middleware, no thread hop); everything else to Django's
standard handler; websockets to Channels. On shutdown the call log buffer is flushed.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from gateway_project.common.malloc import cap_arenas

cap_arenas()  # before Django, the apps and their threads start allocating

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator  # noqa: E402

from gateway_project.routing import websocket_urlpatterns  # noqa: E402
from proxy import lifecycle  # noqa: E402
from proxy.asgi import ProxyHandler  # noqa: E402

proxy_app = ProxyHandler()


class PublicOriginValidator(OriginValidator):
    """Websockets only from the console's own origin: PUBLIC_URL's scheme, host and port, exactly (a
    page on another port or over the other scheme of the same host is another origin)."""

    def __init__(self, application: Any) -> None:
        super().__init__(application, [settings.PUBLIC_URL])

    def valid_origin(self, parsed_origin: Any) -> bool:
        if parsed_origin is None:
            return False
        return _origin(parsed_origin) == _origin(urlsplit(settings.PUBLIC_URL))


def _origin(url: Any) -> tuple[str, str, int]:
    scheme = (url.scheme or "").lower()
    try:
        port = url.port
    except ValueError:
        return ("", "", 0)
    return (scheme, (url.hostname or "").lower(), port or (443 if scheme in ("https", "wss") else 80))


websocket_app = PublicOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            lifecycle.startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await lifecycle.shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope: dict, receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "http":
        path = scope["path"]
        if path.startswith("/v1/") or path == "/mcp" or path.startswith("/mcp/"):
            await proxy_app(scope, receive, send)
        else:
            await django_app(scope, receive, send)
    elif kind == "websocket":
        await websocket_app(scope, receive, send)
    elif kind == "lifespan":
        await _lifespan(receive, send)
