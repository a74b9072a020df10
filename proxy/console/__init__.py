"""Console pages and management API endpoints that need the proxy runtime (the router, breakers).

Domain apps never import `proxy`, so the pages that embed these (routing.views) load them with htmx."""
