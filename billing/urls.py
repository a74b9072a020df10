from django.urls import path

from billing import apis, views
from tenants.apis import by_method

urlpatterns = [
    # Budget alert emails link here (billing.services.budget_alert_send): keep the path.
    path("t/<slug:slug>/budgets/", views.budgets, name="budgets"),
    path("t/<slug:slug>/budgets/<int:budget_id>/", views.budget_detail, name="budget-detail"),
    path("t/<slug:slug>/budgets/<int:budget_id>/delete/", views.budget_delete_view, name="budget-delete"),
    path("t/<slug:slug>/limits/", views.limits, name="limits"),
    path("t/<slug:slug>/limits/keys/<int:key_id>/", views.key_limits, name="key-limits"),
    path("t/<slug:slug>/spend/", views.spend, name="spend"),
]

# Mounted under /api/v1/ by gateway_project.urls.
api_urlpatterns = [
    path("budgets/", by_method(get=apis.BudgetListApi, post=apis.BudgetUpsertApi), name="api-budgets"),
    path("budgets/<int:budget_id>/", apis.BudgetDeleteApi.as_view(), name="api-budget-detail"),
    path("spend/", apis.SpendApi.as_view(), name="api-spend"),
]
