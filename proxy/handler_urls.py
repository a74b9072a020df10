"""The urlconf of proxy.asgi.ProxyHandler (/v1/ and /mcp): see proxy.urls.proxy_first_urlpatterns."""

from proxy.urls import proxy_first_urlpatterns as urlpatterns

__all__ = ["urlpatterns"]
