from django.urls import path, re_path

from proxy import keyinfo, views
from proxy.mcp import endpoint as mcp

urlpatterns = [
    path("v1/chat/completions", views.chat_completions, name="v1-chat"),
    path("v1/completions", views.completions, name="v1-completions"),
    path("v1/responses", views.responses, name="v1-responses"),
    path("v1/responses/<str:response_id>", views.stored_response, name="v1-response"),
    path("v1/responses/<str:response_id>/input_items", views.stored_response_input_items, name="v1-response-items"),
    path("v1/embeddings", views.embeddings, name="v1-embeddings"),
    path("v1/feedback", views.feedback, name="v1-feedback"),
    path("v1/messages", views.messages, name="v1-messages"),
    path("v1/messages/count_tokens", views.count_tokens, name="v1-messages-count-tokens"),
    path("v1/models", views.models, name="v1-models"),
    path("v1/models/<path:model>", views.models, name="v1-model"),
    path("v1/gateway/key", keyinfo.key_info, name="v1-gateway-key"),
    re_path(r"^v1/(?P<path>.*)$", views.not_found),
    path("mcp", mcp.endpoint, name="mcp"),
    path("mcp/<str:server>", mcp.endpoint, name="mcp-server"),
]
