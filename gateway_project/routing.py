from django.urls import path  # noqa: F401

# Websocket routes (live call logs arrive with the observability issue).
websocket_urlpatterns: list = []
