"""The ASGI entry point: proxy, console and websockets, plus lifespan for clean shutdown.

/v1/ goes to the lean ProxyHandler (no middleware, no thread hop); everything else to Django's
standard handler; websockets to Channels. On shutdown the call log buffer is flushed.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

from django.core.asgi import get_asgi_application

django_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from gateway_project.routing import websocket_urlpatterns  # noqa: E402
from proxy.asgi import ProxyHandler  # noqa: E402

proxy_app = ProxyHandler()
websocket_app = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))


async def _lifespan(receive: Any, send: Any) -> None:
    from observability.background import serve as serve_logs
    from observability.logbuffer import buffer
    from proxy import views
    from proxy.configcache import state
    from proxy.upstream import close_client

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            serve_logs()  # live logs, and with REDIS_URL the durable log stream and its consumer
            views.ensure_background()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            from proxy.background import drain

            await drain()  # settle in-flight budget reservations before the logs' final flush
            await state.stop()
            await buffer.stop()
            await close_client()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope: dict, receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "http":
        if scope["path"].startswith("/v1/"):
            await proxy_app(scope, receive, send)
        else:
            await django_app(scope, receive, send)
    elif kind == "websocket":
        await websocket_app(scope, receive, send)
    elif kind == "lifespan":
        await _lifespan(receive, send)
