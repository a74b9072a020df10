"""A Redis server of a test's own, for the fault tests to stop, kill and start again."""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis

from tests.helpers import wait_for


def start_redis(port: int, data_dir: Path, *, aof: bool = False) -> subprocess.Popen:
    """redis-server on 127.0.0.1:`port`, keeping its data in `data_dir`: nothing (the default, like
    Redis used as a cache) or an append-only file fsynced on every write (`aof`)."""
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if aof else ["--appendonly", "no"]
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *persistence,
            "--dir",
            str(data_dir),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    if not wait_for(lambda: pings(url), timeout=10):
        proc.kill()
        raise RuntimeError(f"redis-server did not start on port {port}")
    return proc


def pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.2).ping())
    except redis.exceptions.ConnectionError:
        return False
