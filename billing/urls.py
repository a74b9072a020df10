from django.urls import path

from billing import apis, views
from billing.invoicing import views as invoice_views
from billing.stripe import views as stripe_views
from billing.stripe import webhooks as stripe_webhooks
from tenants.apis import by_method

urlpatterns = [
    # Budget alert emails link here (billing.services.budget_alert_send): keep the path.
    path("t/<slug:slug>/budgets/", views.budgets, name="budgets"),
    path("t/<slug:slug>/budgets/outage-mode/", views.budget_outage_mode_view, name="budget-outage-mode"),
    path("t/<slug:slug>/budgets/<int:budget_id>/", views.budget_detail, name="budget-detail"),
    path("t/<slug:slug>/budgets/<int:budget_id>/delete/", views.budget_delete_view, name="budget-delete"),
    path("t/<slug:slug>/limits/", views.limits, name="limits"),
    path("t/<slug:slug>/limits/keys/<int:key_id>/", views.key_limits, name="key-limits"),
    path("t/<slug:slug>/spend/", views.spend, name="spend"),
    path("t/<slug:slug>/billing/", invoice_views.billing_page, name="billing"),
    path(
        "t/<slug:slug>/billing/invoices/<int:invoice_id>/csv",
        invoice_views.invoice_csv_download,
        name="billing-invoice-csv",
    ),
    path(
        "t/<slug:slug>/billing/invoices/<int:invoice_id>/pdf",
        invoice_views.invoice_pdf_download,
        name="billing-invoice-pdf",
    ),
    path(
        "t/<slug:slug>/billing/invoices/<int:invoice_id>/void",
        invoice_views.invoice_void_view,
        name="billing-invoice-void",
    ),
    path(
        "t/<slug:slug>/billing/invoices/<int:invoice_id>/finalize",
        views.invoice_finalize_view,
        name="billing-invoice-finalize",
    ),
    path("t/<slug:slug>/billing/stripe-portal/", stripe_views.stripe_portal, name="billing-stripe-portal"),
    # Stripe's dashboard is configured with this path: keep it.
    path("billing/stripe/webhook/", stripe_webhooks.stripe_webhook, name="billing-stripe-webhook"),
]

# Mounted under /api/v1/ by gateway_project.urls.
api_urlpatterns = [
    path("budgets/", by_method(get=apis.BudgetListApi, post=apis.BudgetUpsertApi), name="api-budgets"),
    path("budgets/<int:budget_id>/", apis.BudgetDeleteApi.as_view(), name="api-budget-detail"),
    path("spend/", apis.SpendApi.as_view(), name="api-spend"),
    path("invoices/", apis.InvoiceListApi.as_view(), name="api-invoices"),
    path("invoices/<int:invoice_id>/", apis.InvoiceDetailApi.as_view(), name="api-invoice-detail"),
    # The contract names the downloads without a trailing slash.
    path("invoices/<int:invoice_id>/pdf", apis.InvoicePdfApi.as_view(), name="api-invoice-pdf"),
    path("invoices/<int:invoice_id>/csv", apis.InvoiceCsvApi.as_view(), name="api-invoice-csv"),
    path("invoices/<int:invoice_id>/void", apis.InvoiceVoidApi.as_view(), name="api-invoice-void"),
    path("invoices/<int:invoice_id>/finalize", apis.InvoiceFinalizeApi.as_view(), name="api-invoice-finalize"),
]
