"""A worker thread's database connection, dropped once it broke.

Django checks a persistent connection's health, and drops a broken one, at the start and end of each
request (request_started/request_finished). The proxy's database work runs in executor threads that
see no request signals, so a connection that broke in a database outage stayed in its thread and failed
every later query there ("the connection is closed"), long after the database was back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

from asgiref.sync import sync_to_async


def keep_connection() -> None:
    """Keep this thread's connection from one use to the next, dropping it only when it broke.

    Django's close_old_connections() would also close it after every use when CONN_MAX_AGE is 0 (the
    call-log writer then reconnected for each flush, a quarter of its CPU). A connection that saw an
    error is checked, and closed if unusable: the next statement reconnects."""
    from django.db import connection

    if connection.connection is not None and connection.errors_occurred:
        if connection.is_usable():
            connection.errors_occurred = False
        else:
            connection.close()


def with_live_connection[**P, R](fn: Callable[P, R]) -> Callable[P, R]:
    """`fn`, run after keep_connection(): for functions handed to sync_to_async on the proxy's path."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        keep_connection()
        return fn(*args, **kwargs)

    return run


def db_thread[**P, R](fn: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """`fn` as a coroutine function run in an executor thread (not the one thread Django keeps for
    thread-sensitive work) with that thread's connection checked first: how the proxy reads and
    writes the database off its event loop."""
    return sync_to_async(with_live_connection(fn), thread_sensitive=False)


__all__ = ["db_thread", "keep_connection", "with_live_connection"]
