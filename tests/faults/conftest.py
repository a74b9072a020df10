"""Marks every test under tests/faults/ `faults` and `e2e`: each injects the fault of a component the
gateway depends on (a worker killed, Redis killed, ...) into real processes, then checks that every
answered call is logged and billed exactly once. `make test-faults` runs them alone; `make test` runs
them with the rest (and `make test-fast` leaves them out, like every test that starts a server).
No fixtures here (they are in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.faults)
