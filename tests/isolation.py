"""Per-run isolation: two test runs on one machine never share, flush or drop each other's databases.

A pytest plugin, loaded by `-p tests.isolation` (pyproject.toml addopts) so that it runs before
pytest-django imports the settings; no fixtures here (they are all in tests/conftest.py).

- The run id: GATEWAY_TEST_RUN, random hex unless set. The process pytest starts makes it once and
  puts it in the environment; the xdist workers and the gateway servers the e2e tests start inherit it.
- PostgreSQL: every test database carries the run id, test_<name>_gw0_<run> (the fixture
  django_db_modify_db_settings in tests/conftest.py). pytest-django creates it and drops it at the end
  (tests/conftest.py's django_db_setup first closes what this process's threads left connected to it).
  Set GATEWAY_TEST_RUN yourself to keep a name across runs (--reuse-db). A run killed outright leaves
  its databases behind: `psql -Atc "select datname from pg_database where datname like 'test_%'"` lists them.
- Redis (only when REDIS_URL is set): every process that runs tests (each xdist worker; pytest itself
  without -n) takes a Redis database of its own: REDIS_URL's number if it is free, else the next free
  one counting down (wrapping round). Database 0 holds the locks and is never taken; 12 and 13 are
  `make bench`'s. Taking one is `SET gateway-tests:redis-db:<n> <run>:<host>:<pid> NX EX 60` in database
  0; a daemon thread renews it every 20 s, it is deleted at exit, and a crashed run's lock expires
  within a minute. Only a database this process holds is flushed (once, when taken). REDIS_URL in the
  environment then names it, so the settings, every client in the process and the gateway servers it
  starts (tests.helpers.start_gateway passes settings.REDIS_URL) all use it.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import socket
import sys
import threading
from urllib.parse import urlsplit, urlunsplit

import pytest

RUN_ENV = "GATEWAY_TEST_RUN"
LOCK_DB = 0
RESERVED_DBS = frozenset({LOCK_DB, 12, 13})  # the locks; `make bench`'s BENCH_REDIS_URL defaults
DATABASES = 16  # Redis's default `databases`
LOCK_TTL = 60
LOCK_PREFIX = "gateway-tests:redis-db:"

# Renew the lock only if it is still ours; delete it only if it is still ours.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def run_id() -> str:
    run = os.environ.get(RUN_ENV) or secrets.token_hex(4)
    if not re.fullmatch(r"[a-z0-9_]{1,24}", run):
        raise pytest.UsageError(f"{RUN_ENV}={run!r}: use 1 to 24 of a-z, 0-9 and _ (it ends database names)")
    os.environ[RUN_ENV] = run
    return run


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def candidates(requested: int) -> list[int]:
    """REDIS_URL's database first (unless it is reserved), then counting down from it, wrapping round."""
    order = [(requested - i) % DATABASES for i in range(DATABASES)]
    return [db for db in order if db not in RESERVED_DBS]


def claim_redis_db(url: str, run: str) -> str:
    """Take a free Redis database for this process; returns REDIS_URL naming it."""
    import redis

    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return url
    path = parts.path.strip("/")
    requested = int(path) if path.isdigit() else 0
    locks = redis.Redis.from_url(_with_db(url, LOCK_DB), socket_timeout=5, socket_connect_timeout=2)
    token = f"{run}:{socket.gethostname()}:{os.getpid()}"
    try:
        db = next(
            (db for db in candidates(requested) if locks.set(LOCK_PREFIX + str(db), token, nx=True, ex=LOCK_TTL)), None
        )
    except redis.exceptions.ConnectionError as exc:
        # Nothing to share or flush; the tests that need Redis fail on their own and say why.
        sys.stderr.write(f"tests/isolation.py: Redis at {url} is unreachable ({exc}); REDIS_URL left as is\n")
        return url
    if db is None:
        raise pytest.UsageError(
            f"no free Redis database at {url}: every one but {sorted(RESERVED_DBS)} is held by another test run "
            f"(keys {LOCK_PREFIX}* in database {LOCK_DB})"
        )
    key = LOCK_PREFIX + str(db)
    claimed = _with_db(url, db)
    redis.Redis.from_url(claimed).flushdb()  # ours now: what a crashed run left there goes

    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LOCK_TTL / 3):
            try:
                if not locks.eval(_RENEW, 1, key, token, LOCK_TTL) and not locks.set(key, token, nx=True, ex=LOCK_TTL):
                    sys.stderr.write(f"tests/isolation.py: lost the lock on Redis database {db} to another run\n")
            except redis.exceptions.RedisError:
                pass  # try again at the next tick; the lock lives LOCK_TTL seconds

    def release() -> None:
        stop.set()
        try:
            locks.eval(_RELEASE, 1, key, token)
        except redis.exceptions.RedisError:
            pass  # it expires

    threading.Thread(target=renew, name="redis-db-lock", daemon=True).start()
    atexit.register(release)
    return claimed


def _runs_tests(early_config: pytest.Config) -> bool:
    """False in the xdist controller (it only hands out tests) and for --help / --version."""
    ns = early_config.known_args_namespace
    if getattr(ns, "help", False) or getattr(ns, "version", False):
        return False
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return True
    return not (getattr(ns, "numprocesses", None) or getattr(ns, "tx", None))


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config, parser, args):
    # A wrapper runs before pytest-django's hook, which imports gateway_project.settings.
    run = run_id()
    if os.environ.get("REDIS_URL") and _runs_tests(early_config):
        os.environ["REDIS_URL"] = claim_redis_db(os.environ["REDIS_URL"], run)
    return (yield)
