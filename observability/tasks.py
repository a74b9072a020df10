"""Celery tasks of the observability app: thin, each calls one function."""

from __future__ import annotations

from celery import shared_task


@shared_task
def calllog_partitions_create_ahead() -> list[str]:
    """Creates the call log's daily partitions a week ahead (beat: hourly; a missed run costs nothing)."""
    from observability.partitions import create_ahead

    return create_ahead()


@shared_task
def ab_splits_check() -> list[str]:
    """Ends the A/B splits whose stop rule concludes (beat: every minute); the models decided."""
    from observability.splits import check_split_stops

    return [f"{d.tenant}/{d.model}: {d.winner}" for d in check_split_stops()]


@shared_task(ignore_result=True)
def evaluate_call(tenant_id: int, call_id: str, evaluator_id: int) -> float | None:
    """Scores one logged call by one evaluator (enqueued by the call-log writer's hook)."""
    from observability.evaluators import evaluate

    return evaluate(tenant_id, call_id, evaluator_id)


@shared_task
def calllog_retention_apply() -> dict:
    """Applies every tenant's log retention (beat: hourly): drops old partitions, deletes in batches."""
    from observability.partitions import apply_retention

    report = apply_retention()
    return {"dropped": report.dropped, "deleted": report.deleted}


@shared_task(ignore_result=True)
def evaluator_backfill(tenant_id: int, evaluator: str, since: str, until: str, run_id: str) -> None:
    """Runs one evaluator over a range of past calls (started from the console), its progress in the cache."""
    from observability.backfills import run_backfill

    run_backfill(tenant_id, evaluator, since=since, until=until, run_id=run_id)
