from django.urls import path

from observability.consumers import LiveLogsConsumer

# Websocket routes, wrapped in gateway_project.asgi by AllowedHostsOriginValidator(AuthMiddlewareStack(...)).
websocket_urlpatterns: list = [
    path("ws/logs/", LiveLogsConsumer.as_asgi(), name="ws-logs"),
]
