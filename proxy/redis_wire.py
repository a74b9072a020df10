"""A minimal Redis client for the hot path: RESP2 over one asyncio connection per event loop.

redis-py's asyncio client costs several times more CPU per command than this. Requests are
pipelined on the one connection (replies come back in order), a send may wait a few milliseconds for
company on the wire, and a lost connection fails every pending reply and reconnects on next use.
Used by the limiter (proxy.limits) and the prompt cache step.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("gateway.limits")


def retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


class RedisError(Exception):
    """An error reply from Redis."""


class Incomplete(Exception):
    pass


def parse_reply(buf: bytearray | bytes, pos: int) -> tuple[Any, int]:
    """One RESP2 reply from buf at pos: (value, next pos). Raises Incomplete when more bytes are needed."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise Incomplete
    kind = buf[pos]
    line = bytes(buf[pos + 1 : end])
    pos = end + 2
    if kind == 36:  # $ bulk string
        n = int(line)
        if n < 0:
            return None, pos
        if len(buf) < pos + n + 2:
            raise Incomplete
        return bytes(buf[pos : pos + n]), pos + n + 2
    if kind == 58:  # : integer
        return int(line), pos
    if kind == 42:  # * array
        n = int(line)
        if n < 0:
            return None, pos
        items = []
        for _ in range(n):
            item, pos = parse_reply(buf, pos)
            items.append(item)
        return items, pos
    if kind == 43:  # + simple string
        return line, pos
    if kind == 45:  # - error
        return RedisError(line.decode("utf-8", "replace")), pos
    raise RedisError(f"unexpected reply type {chr(kind)!r}")


def command(*args: bytes | str | int) -> bytes:
    """RESP encoding of one command: what redis-py's pack_command does, without its per-argument dispatch."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class Connection(asyncio.Protocol):
    """One pipelined connection per event loop: every command of the process goes out on it in order and
    its reply is matched in order (RESP guarantees both). Commands issued in the same loop iteration
    (the admissions and settlements of concurrent requests) leave in one write and come back in one read.

    Why not redis-py: its per-command path (connection pool checkout, argument packing, RESP3 parsing,
    timeouts, observability hooks, one socket write per command) cost more CPU than the gateway's whole
    admission. Only what the two scripts need is here: EVALSHA, and SCRIPT LOAD when Redis lost them.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        self.buf = bytearray()
        self.out: list[bytes] = []
        self.flush_pending = False
        self.timer: asyncio.TimerHandle | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("Redis closed the connection")
        self.transport = None
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError(f"Redis connection lost: {self.lost}"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        try:
            while pos < len(buf):
                value, pos = parse_reply(buf, pos)
                waiter = self.waiters.popleft()
                if waiter.done():  # the caller was cancelled; its reply is dropped
                    continue
                if isinstance(value, RedisError):
                    waiter.set_exception(value)
                else:
                    waiter.set_result(value)
        except Incomplete:
            pass
        except (RedisError, ValueError, IndexError) as exc:  # a stream we cannot follow: start afresh
            logger.error("unreadable reply from Redis; reconnecting", exc_info=exc)
            if self.transport is not None:
                self.transport.abort()
            return
        del buf[:pos]

    def send(self, payload: bytes, defer: float = 0.0) -> asyncio.Future:
        """Queue one command; it is written at the end of this loop iteration, or, with `defer`, within
        that many seconds: with the next command that cannot wait, or on a timer if none comes."""
        if self.transport is None or self.lost is not None:
            raise ConnectionError("Redis connection is closed")
        waiter = self.loop.create_future()
        self.waiters.append(waiter)
        self.out.append(payload)
        if self.flush_pending:
            return waiter
        if not defer:
            self.flush_pending = True
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.loop.call_soon(self._flush)
        elif self.timer is None:
            self.timer = self.loop.call_later(defer, self._flush)
        return waiter

    def _flush(self) -> None:
        self.flush_pending = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        out, self.out = self.out, []
        if self.transport is not None and out:
            self.transport.write(b"".join(out))


class Client:
    """The limiter's Redis client on one event loop: connects on first use and again after a loss."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop) -> None:
        from redis.connection import parse_url

        opts = parse_url(url)
        self.host = opts.get("host", "localhost")
        self.port = int(opts.get("port", 6379))
        self.path = opts.get("path")  # unix:// URLs
        self.db = int(opts.get("db", 0) or 0)
        self.username = opts.get("username")
        self.password = opts.get("password")
        self.loop = loop
        self.conn: Connection | None = None
        self.connecting: asyncio.Future[Connection] | None = None

    async def _connect(self) -> Connection:
        def factory() -> Connection:
            return Connection(self.loop)

        if self.path:
            _t, conn = await self.loop.create_unix_connection(factory, self.path)
        else:
            _t, conn = await self.loop.create_connection(factory, self.host, self.port)
        setup = []
        if self.password:
            setup.append(
                conn.send(
                    command("AUTH", self.username, self.password) if self.username else command("AUTH", self.password)
                )
            )
        if self.db:
            setup.append(conn.send(command("SELECT", self.db)))
        # Named, so an operator (and the tests) can tell the limiter's one connection per process apart.
        setup.append(conn.send(command("CLIENT", "SETNAME", f"gw-limiter-{os.getpid()}")))
        try:
            for reply in setup:
                await reply
        except BaseException:
            if conn.transport is not None:
                conn.transport.close()
            raise
        return conn

    async def connection(self) -> Connection:
        conn = self.conn
        if conn is not None and conn.lost is None:
            return conn
        # Concurrent first calls share one connection attempt.
        if self.connecting is None:
            self.connecting = self.loop.create_task(self._connect())
        connecting = self.connecting
        try:
            self.conn = await asyncio.shield(connecting)
        finally:
            if self.connecting is connecting and connecting.done():
                self.connecting = None
        return self.conn

    async def evalsha(self, script: Script, keys: list[str], args: list[Any], defer: float = 0.0) -> Any:
        conn = self.conn
        if conn is None or conn.lost is not None:
            conn = await self.connection()
        try:
            return await conn.send(command(b"EVALSHA", script.sha, len(keys), *keys, *args), defer)
        except RedisError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        # Redis restarted or its script cache was flushed: EVAL loads the script again for everyone.
        return await conn.send(command(b"EVAL", script.source, len(keys), *keys, *args))


@dataclass(frozen=True, slots=True)
class Script:
    source: bytes
    sha: bytes

    @classmethod
    def of(cls, source: str) -> Script:
        data = source.encode()
        return cls(data, hashlib.sha1(data).hexdigest().encode())


# How long a settlement may wait for company on the wire. Far below anything a limit can notice: a
