from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from billing import urls as billing_urls
from routing import urls as routing_urls
from tenants import urls as tenants_urls

urlpatterns = [
    path("", include("proxy.urls")),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    # The management REST API. Each app contributes its endpoints; later apps append theirs here.
    path(
        "api/v1/", include(tenants_urls.api_urlpatterns + routing_urls.api_urlpatterns + billing_urls.api_urlpatterns)
    ),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("tenants.urls")),
    path("", include("routing.urls")),
    path("", include("billing.urls")),
]
