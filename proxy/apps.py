from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "proxy"

    def ready(self) -> None:
        # Breaker states on /metrics, read only when scraped.
        from observability import exposition
        from proxy import gauges

        exposition.register_gauges(gauges.breaker_states)
