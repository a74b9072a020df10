"""The log buffer's store handling, without a database: a refused batch is split, not written row by row."""

from __future__ import annotations

from observability import metrics
from observability.live import usd
from observability.logbuffer import LogBuffer


class PickyStore:
    """Refuses any write containing a row marked bad, like PostgreSQL refusing one value of a batch."""

    def __init__(self) -> None:
        self.writes = 0
        self.rows: list[dict] = []

    def write(self, records: list[dict]) -> None:
        self.writes += 1
        if any(r.get("bad") and not r.get("error_message", "").startswith("[the database refused") for r in records):
            raise ValueError("integer out of range")
        self.rows.extend(records)


def test_a_few_bad_rows_among_thousands_cost_a_few_dozen_writes_and_keep_the_order():
    store = PickyStore()
    buffer = LogBuffer(sink=store)
    refused = metrics.value("calllog_rows_refused")
    for i in range(4000):
        buffer.add({"request_id": f"r{i}", "tenant_id": 1, "bad": i in (7, 2500)})
    assert buffer.flush_sync() == 4000
    assert [r["request_id"] for r in store.rows] == [f"r{i}" for i in range(4000)]
    assert store.writes < 60  # one row at a time would be 4,000 writes
    assert metrics.value("calllog_rows_refused") == refused + 2
    degraded = [r for r in store.rows if r.get("bad")]
    assert [r["request_id"] for r in degraded] == ["r7", "r2500"]
    assert all("database refused" in r["error_message"] for r in degraded)


class BusyStore:
    """A store that a request answers during each write, as under load: a row arrives mid-flush."""

    def __init__(self, buffer: LogBuffer) -> None:
        self.buffer = buffer
        self.batches: list[list[str]] = []

    def write(self, records: list[dict]) -> None:
        self.batches.append([r["request_id"] for r in records])
        if len(self.batches) < 3:  # (a bound, so that a flusher that chases them still ends)
            self.buffer.add({"request_id": f"late{len(self.batches)}", "tenant_id": 1})


def test_a_flush_writes_what_was_buffered_and_leaves_what_arrives_meanwhile_to_the_next():
    # Draining to empty, each write's arrivals made the next write: at c=1, a few rows per COPY, rollup
    # upsert and commit, over and over. The late rows wait for the next tick and go in one batch.
    buffer = LogBuffer()
    store = BusyStore(buffer)
    buffer.sink = store
    for i in range(3):
        buffer.add({"request_id": f"r{i}", "tenant_id": 1})
    assert buffer.flush_sync() == 3
    assert store.batches == [["r0", "r1", "r2"]]
    assert len(buffer) == 1
    assert buffer.flush_sync() == 1
    assert store.batches[-1] == ["late1"]


def test_usd_is_the_exact_decimal_of_picodollars():
    assert [usd(v) for v in (None, 0, 1, 1_500_000_000, 10**12, 123 * 10**12 + 5)] == [
        None,
        "0",
        "0.000000000001",
        "0.0015",
        "1",
        "123.000000000005",
    ]
