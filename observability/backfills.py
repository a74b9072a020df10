"""Back-fills started from the console: one evaluator over a range of past calls, run as a Celery task, with
its progress (calls done of the total) kept in the cache, which every process shares: the page that polls it
may be served by another process than the worker running it. On the embedded default (no broker) the task
runs eagerly, within the request that starts it, and the page shows it finished."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import asdict, dataclass
from datetime import datetime

from django.core.cache import cache

from observability.evaluators import Backfill, backfill
from observability.models import Evaluator
from observability.tasks import evaluator_backfill
from tenants.audit import Actor, audit
from tenants.models import Tenant

logger = logging.getLogger(__name__)

# Long enough to come back to the page after lunch; a run's record is a few bytes.
PROGRESS_TTL_S = 24 * 3600
# Each call's score is one write already; the progress needs no more than a couple a second.
WRITE_EVERY_S = 0.5
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


@dataclass(frozen=True)
class BackfillProgress:
    evaluator: str
    since: str  # ISO 8601, UTC
    until: str
    state: str = QUEUED
    done: int = 0
    total: int | None = None  # None until the run has counted the calls
    scored: int = 0
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.state in (DONE, FAILED)

    @property
    def range_label(self) -> str:
        def minute(iso: str) -> str:
            return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")

        return f"{minute(self.since)} to {minute(self.until)} UTC"


def _key(tenant_id: int, evaluator: str, run_id: str) -> str:
    return f"evaluator-backfill:{tenant_id}:{evaluator}:{run_id}"


def _save(tenant_id: int, run_id: str, progress: BackfillProgress) -> None:
    cache.set(_key(tenant_id, progress.evaluator, run_id), asdict(progress), PROGRESS_TTL_S)


def backfill_progress(tenant_id: int, evaluator: str, run_id: str) -> BackfillProgress | None:
    """A run's progress, None when there is no such run of this tenant's (or it is older than a day)."""
    found = cache.get(_key(tenant_id, evaluator, run_id))
    return BackfillProgress(**found) if isinstance(found, dict) else None


def backfill_start(tenant: Tenant, evaluator: Evaluator, *, since: datetime, until: datetime, actor: Actor) -> str:
    """Enqueue a back-fill of one evaluator over [since, until); the run's id, for its progress."""
    run_id = secrets.token_hex(8)
    progress = BackfillProgress(evaluator=evaluator.name, since=since.isoformat(), until=until.isoformat())
    _save(tenant.id, run_id, progress)
    audit(
        tenant,
        actor=actor,
        action="evaluators.backfill",
        target_type="evaluator",
        target_label=evaluator.name,
        changes={"since": progress.since, "until": progress.until},
    )
    try:
        evaluator_backfill.delay(tenant.id, evaluator.name, progress.since, progress.until, run_id)
    except Exception as exc:  # the broker is down: say so on the page rather than answer 500
        logger.exception("could not enqueue the back-fill of %s", evaluator.name)
        _save(tenant.id, run_id, BackfillProgress(**{**asdict(progress), "state": FAILED, "error": str(exc)[:300]}))
    return run_id


def run_backfill(tenant_id: int, evaluator: str, *, since: str, until: str, run_id: str) -> None:
    """The task's work: the back-fill, its progress written as it goes; a failure is recorded, not raised
    (the page is where someone is waiting for the outcome)."""
    current = BackfillProgress(evaluator=evaluator, since=since, until=until, state=RUNNING)
    _save(tenant_id, run_id, current)
    last_write = 0.0

    def progress(so_far: Backfill, total: int) -> None:
        nonlocal current, last_write
        current = _with(current, done=so_far.calls, total=total, scored=so_far.scored)
        now = time.monotonic()
        if now - last_write >= WRITE_EVERY_S:
            last_write = now
            _save(tenant_id, run_id, current)

    try:
        tenant = Tenant.objects.get(id=tenant_id)
        result = backfill(
            tenant,
            evaluator,
            since=datetime.fromisoformat(since),
            until=datetime.fromisoformat(until),
            progress=progress,
        )
    except Evaluator.DoesNotExist:
        _save(tenant_id, run_id, _with(current, state=FAILED, error="The evaluator was deleted or renamed."))
    except Exception as exc:
        logger.exception("the back-fill of %s failed", evaluator)
        _save(tenant_id, run_id, _with(current, state=FAILED, error=f"{type(exc).__name__}: {str(exc)[:300]}"))
    else:
        done = _with(current, state=DONE, done=result.calls, total=result.calls, scored=result.scored)
        _save(tenant_id, run_id, done)


def _with(progress: BackfillProgress, **changes: object) -> BackfillProgress:
    return BackfillProgress(**{**asdict(progress), **changes})
