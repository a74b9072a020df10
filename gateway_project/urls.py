from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from billing import urls as billing_urls
from gateway_project.admin_login import admin_login
from observability import apis as observability_apis
from observability import exposition as observability_exposition
from observability import health as observability_health
from proxy.console import apis as proxy_apis
from proxy.console import views as proxy_console
from routing import urls as routing_urls
from tenants import urls as tenants_urls
from tenants.apis import api_not_found

# The admin's own password form has no rate limit and no TOTP: admins sign in through allauth.
admin.site.login = admin_login  # type: ignore[method-assign]

urlpatterns = [
    path("", include("proxy.urls")),
    # Browsers ask for /favicon.ico whatever the page links; plain path, not static(), so that loading
    # the URLs never reads the static files manifest.
    path("favicon.ico", RedirectView.as_view(url=settings.STATIC_URL + "img/favicon.svg", permanent=True)),
    # Readiness (database, Redis, migrations) and Prometheus metrics, for the operator's tooling.
    path("readyz", observability_health.readyz, name="readyz"),
    path("metrics", observability_exposition.metrics_view, name="metrics"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    # The management REST API. Each app contributes its endpoints; later apps append theirs here.
    path(
        "api/v1/",
        include(
            tenants_urls.api_urlpatterns
            + routing_urls.api_urlpatterns
            + billing_urls.api_urlpatterns
            + proxy_apis.api_urlpatterns
            + observability_apis.api_urlpatterns
        ),
    ),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its start-up script as a file: the console's CSP allows no inline script.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    # Anything else under /api/ answers in the API's JSON error format, not with the console's HTML 404.
    re_path(r"^api/(?P<rest>.*)$", api_not_found),
    path("", include("tenants.urls")),
    path("", include("routing.urls")),
    path("", include(proxy_console.console_urlpatterns)),
    path("", include("billing.urls")),
    path("", include("observability.urls")),
]
