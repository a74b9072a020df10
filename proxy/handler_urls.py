"""The urlconf of proxy.asgi.ProxyHandler (/v1/ and /mcp): the proxy's routes, then the whole site's,
imported only when something needs it (a reverse() for a link in an alert).

The root urlconf imports every console view (allauth, the API, the forms: 145 modules, 7.6 MiB a
worker), which a worker that only proxies never runs. `include()` would import it at once; a resolver
given the module's name imports it on first use.
"""

from django.urls import URLResolver
from django.urls.resolvers import RoutePattern

from proxy.urls import urlpatterns as proxy_urlpatterns

urlpatterns = [*proxy_urlpatterns, URLResolver(RoutePattern(""), "gateway_project.urls")]
