"""Marks every test under tests/e2e/ `e2e`; `make test-fast` (-m "not e2e") leaves them out. No fixtures here.

The rule: a test module that starts a server lives under tests/e2e/. A server is a real gateway process
(the `gateway` / `gateway_factory` fixtures refuse to start one for a test outside tests/e2e/), a
browser (Playwright), a Django live server or an ASGI/websocket server on a socket. Not a server for this
rule: the fake upstreams of tests/fakes/ that in-process tests start on a loopback thread, and ASGI
apps driven in process (channels' WebsocketCommunicator, httpx's ASGITransport); subprocesses that only
load the settings or run a management command that exits (tests/tenants/test_startup.py) do not count.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before `-m "not e2e"` deselects by marker
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)
