"""Which deployment serves this request: decided per request from the cached tenant config.

Today: the first deployment by priority. Routing strategies (weighted, least-latency, fallbacks)
plug in here without touching the view.
"""

from __future__ import annotations

from typing import Any

from proxy.state import Deployment


def pick_deployment(deployments: list[Deployment], payload: dict[str, Any]) -> Deployment:
    return deployments[0]
