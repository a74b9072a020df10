from django.urls import path

from routing import apis, views
from routing.policies import apis as policy_apis
from routing.policies import views as policy_views
from tenants.apis import by_method

urlpatterns = [
    path("t/<slug:slug>/providers/", views.providers, name="providers"),
    path("t/<slug:slug>/providers/starter/", views.starter, name="starter"),
    path("t/<slug:slug>/providers/<int:provider_id>/", views.provider_detail, name="provider-detail"),
    path("t/<slug:slug>/providers/<int:provider_id>/delete/", views.provider_delete_view, name="provider-delete"),
    path("t/<slug:slug>/providers/<int:provider_id>/test/", views.provider_test, name="provider-test"),
    path("t/<slug:slug>/models/", views.models, name="models"),
    # Model names may contain slashes ("openai/gpt-4o"), so the delete route must come first.
    path("t/<slug:slug>/models/<path:name>/delete/", views.model_delete_view, name="model-delete"),
    path("t/<slug:slug>/models/<path:name>/route/", views.model_route, name="model-route"),
    path("t/<slug:slug>/models/<path:name>/", views.model_detail, name="model-detail"),
    path("t/<slug:slug>/routing/rules/", views.route_rules, name="route-rules"),
    path("t/<slug:slug>/policies/", policy_views.policies, name="policies"),
    path("t/<slug:slug>/policies/cache/", policy_views.policy_cache, name="policy-cache"),
    path("t/<slug:slug>/policies/preview/", policy_views.policy_preview, name="policy-preview"),
    path("t/<slug:slug>/policies/keys/<int:key_id>/", policy_views.key_policy, name="key-policy"),
    path("t/<slug:slug>/policies/guardrails/", policy_views.guardrails, name="guardrails"),
    path("t/<slug:slug>/policies/guardrails/preview/", policy_views.guardrail_preview, name="guardrail-preview"),
    path("t/<slug:slug>/policies/guardrails/<str:name>/edit/", policy_views.guardrail_edit, name="guardrail-edit"),
    path(
        "t/<slug:slug>/policies/guardrails/<str:name>/delete/", policy_views.guardrail_delete, name="guardrail-delete"
    ),
]

# Mounted under /api/v1/ by gateway_project.urls.
api_urlpatterns = [
    path("providers/", by_method(get=apis.ProviderListApi, post=apis.ProviderCreateApi), name="api-providers"),
    path(
        "providers/<int:provider_id>/",
        by_method(get=apis.ProviderDetailApi, patch=apis.ProviderUpdateApi, delete=apis.ProviderDeleteApi),
        name="api-provider-detail",
    ),
    path("providers/<int:provider_id>/test/", apis.ProviderTestApi.as_view(), name="api-provider-test"),
    path("models/", by_method(get=apis.ModelListApi, post=apis.ModelCreateApi), name="api-models"),
    path(
        "models/<path:name>/",
        by_method(get=apis.ModelDetailApi, put=apis.ModelReplaceApi, delete=apis.ModelDeleteApi),
        name="api-model-detail",
    ),
    path(
        "policies/pii/",
        by_method(get=policy_apis.PiiPolicyGetApi, put=policy_apis.PiiPolicyPutApi),
        name="api-policy-pii",
    ),
    path(
        "policies/cache/",
        by_method(get=policy_apis.CachePolicyGetApi, put=policy_apis.CachePolicyPutApi),
        name="api-policy-cache",
    ),
    path(
        "policies/guardrails/",
        by_method(get=policy_apis.GuardrailsGetApi, put=policy_apis.GuardrailsPutApi),
        name="api-policy-guardrails",
    ),
]
