"""Fire-and-forget work started by a request (settling budgets, alerts) that must outlive it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger("gateway.tasks")

# The event loop keeps only weak references to tasks: hold them until they finish.
_running: set[asyncio.Task] = set()


def _done(task: asyncio.Task) -> None:
    _running.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("background task failed", exc_info=task.exception())


def spawn(coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
    task = asyncio.get_running_loop().create_task(coro)
    _running.add(task)
    task.add_done_callback(_done)
    return task


async def drain(limit_seconds: float = 10.0) -> None:
    """Wait for pending background work (used on shutdown)."""
    if _running:
        await asyncio.wait(list(_running), timeout=limit_seconds)
