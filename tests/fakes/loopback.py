"""Running a fake upstream: an aiohttp app on a loopback port, in a thread with its own event loop, so
the test's synchronous code and the gateway's subprocess can both call it."""

from __future__ import annotations

import asyncio
import socket
import threading

from aiohttp import web


class LoopbackServer:
    """Mixin for the fakes: `serve(app, name)` in their `start()`, and `stop()`. Needs `host` and
    sets `port`."""

    host: str
    port: int

    def serve(self, app: web.Application, name: str) -> None:
        sock = socket.socket()
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        ready = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            runner = web.AppRunner(app, handle_signals=False)
            self.loop.run_until_complete(runner.setup())
            self.loop.run_until_complete(web.SockSite(runner, sock).start())
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(runner.cleanup())

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
