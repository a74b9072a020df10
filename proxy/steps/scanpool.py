"""Large prompts are scanned for PII off the event loop, in scanner processes, under a time budget.

The built-in detectors are pure Python past their regexes: adversarial text (a megabyte of digit runs
or phone numbers) costs them up to a few seconds per megabyte. Scanned on the event loop, one such
prompt would stall every call of every tenant this process serves; in a thread it would still hold the
GIL. So a payload over GATEWAY_PII_INLINE_BYTES goes to a small pool of scanner processes
(GATEWAY_PII_SCAN_WORKERS, started on first use), and:

- a tenant has at most one scan in the pool per gateway process, so one tenant's prompts cannot occupy
  every scanner (the others' large prompts still get theirs; small prompts never wait);
- the whole scan, queueing included, has GATEWAY_PII_SCAN_BUDGET seconds; past it the request is
  refused with 413 `pii_scan_too_large` (fail closed: nothing unscanned is forwarded), and a scanner
  still busy with it is stopped, so an abandoned scan cannot hold a scanner;
- a payload over GATEWAY_PII_SCAN_MAX_BYTES is refused at once, with the same code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import time
from typing import Any

from django.conf import settings

from observability import metrics
from proxy.errors import ProxyError
from routing.policies.engine import PiiSession
from routing.policies.offload import scan_payload

logger = logging.getLogger("gateway.pii")

_pool: concurrent.futures.ProcessPoolExecutor | None = None
_slots: asyncio.Semaphore | None = None
_slots_loop: asyncio.AbstractEventLoop | None = None
_tenants: dict[int, asyncio.Semaphore] = {}


def too_large(message: str) -> ProxyError:
    return ProxyError(413, message, code="pii_scan_too_large")


def _executor() -> concurrent.futures.ProcessPoolExecutor:
    global _pool
    if _pool is None:
        # forkserver, not fork: this process runs an event loop and threads that a fork would copy.
        context = multiprocessing.get_context("forkserver")
        _pool = concurrent.futures.ProcessPoolExecutor(settings.GATEWAY_PII_SCAN_WORKERS, mp_context=context)
    return _pool


def _stop_pool() -> None:
    """Kill the scanners (one is stuck on a scan nobody waits for) and start afresh on the next scan."""
    global _pool
    pool, _pool = _pool, None
    if pool is None:
        return
    for process in list(getattr(pool, "_processes", {}).values()):
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def _semaphores(tenant_id: int) -> tuple[asyncio.Semaphore, asyncio.Semaphore]:
    global _slots, _slots_loop
    loop = asyncio.get_running_loop()
    if _slots is None or _slots_loop is not loop:
        _slots, _slots_loop = asyncio.Semaphore(settings.GATEWAY_PII_SCAN_WORKERS), loop
        _tenants.clear()
    mine = _tenants.get(tenant_id)
    if mine is None:
        if len(_tenants) > 10_000:
            for ident in [t for t, s in _tenants.items() if not s.locked()]:
                del _tenants[ident]
        mine = _tenants[tenant_id] = asyncio.Semaphore(1)
    return mine, _slots


async def scan_off_loop(session: PiiSession, spec_json: bytes, payload: dict[str, Any], tenant_id: int) -> None:
    """Apply the policy to `payload` in place in a scanner process; the session gets the counts and
    pseudonyms. Raises what the scan raises (PiiBlocked, ScanTimeout) or 413 pii_scan_too_large."""
    budget = settings.GATEWAY_PII_SCAN_BUDGET
    deadline = time.monotonic() + budget
    mine, slots = _semaphores(tenant_id)
    message = (
        f"The data policy could not scan this request within its time budget ({budget:g} s, "
        "GATEWAY_PII_SCAN_BUDGET); it was not sent. Send a shorter prompt."
    )
    try:
        async with asyncio.timeout(budget):
            async with mine, slots:
                future = asyncio.get_running_loop().run_in_executor(_executor(), scan_payload, spec_json, payload)
                try:
                    scanned, state = await asyncio.shield(future)
                except asyncio.CancelledError:
                    if not future.done():
                        metrics.incr("pii_scan_abandoned")
                        _stop_pool()
                    raise
                except concurrent.futures.BrokenExecutor:
                    _stop_pool()  # a scanner died (killed above for another request): once more, afresh
                    remaining = deadline - time.monotonic()
                    future = asyncio.get_running_loop().run_in_executor(_executor(), scan_payload, spec_json, payload)
                    scanned, state = await asyncio.wait_for(asyncio.shield(future), remaining)
    except TimeoutError:
        metrics.incr("pii_scan_too_large")
        raise too_large(message) from None
    payload.clear()
    payload.update(scanned)
    session.counts.update(state["counts"])
    session.placeholders.update(state["placeholders"])
    session.values.update(state["values"])
    session.counters.update(state["counters"])
    session.restorer = None
