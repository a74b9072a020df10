from django.urls import path

from observability import evaluator_views, key_views, live_views, views

urlpatterns = [
    path("t/<slug:slug>/dashboard/", views.dashboard, name="dashboard"),
    path("t/<slug:slug>/logs/explore/", views.log_explorer, name="log-explorer"),
    path("t/<slug:slug>/logs/live/", live_views.live_logs, name="logs-live"),
    path("t/<slug:slug>/logs/export/", views.log_export, name="log-export"),
    path("t/<slug:slug>/logs/<int:log_id>/", views.log_detail, name="log-detail"),
    path("t/<slug:slug>/logs/request/<str:request_id>/", views.log_by_request, name="log-by-request"),
    path("t/<slug:slug>/playground/", views.playground, name="playground"),
    path("t/<slug:slug>/playground/send/", views.playground_send, name="playground-send"),
    path("t/<slug:slug>/playground/cost/<str:request_id>/", views.playground_cost, name="playground-cost"),
    path("t/<slug:slug>/spend/usage/", views.spend_usage, name="spend-usage"),
    path("t/<slug:slug>/keys/<int:key_id>/usage/", key_views.key_usage, name="key-usage"),
    path("t/<slug:slug>/evaluators/", evaluator_views.evaluators, name="evaluators"),
    path("t/<slug:slug>/evaluators/preview/", evaluator_views.evaluator_preview, name="evaluator-preview"),
    path("t/<slug:slug>/evaluators/backfill/", evaluator_views.evaluator_backfill, name="evaluator-backfill"),
    path("t/<slug:slug>/evaluators/<str:name>/edit/", evaluator_views.evaluator_edit, name="evaluator-edit"),
    path("t/<slug:slug>/evaluators/<str:name>/delete/", evaluator_views.evaluator_delete, name="evaluator-delete"),
    path(
        "t/<slug:slug>/evaluators/<str:name>/backfill/<slug:run>/",
        evaluator_views.evaluator_backfill_progress,
        name="evaluator-backfill-progress",
    ),
]
