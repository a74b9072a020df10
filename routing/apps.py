from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"

    def ready(self) -> None:
        from routing import declarative, mcp_servers, selectors
        from routing.policies import apis as policy_apis
        from routing.policies import declarative as policy_declarative

        # The tenant YAML: providers, models and rules first, then the data policies (billing's
        # sections follow, registered by billing's own ready()).
        declarative.register()
        policy_declarative.register()
        mcp_servers.register()
        # What tenants' pages and key API need of routing.
        selectors.register()
        policy_apis.register()
