"""The markdown report: one table of all rows, then memory and what each extra variant adds."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.bench.load import LoadResult

DIRECT = "direct (mock)"


@dataclass(frozen=True)
class Scenario:
    mode: str  # "json" | "stream"
    concurrency: int

    @property
    def label(self) -> str:
        return f"{self.mode} c={self.concurrency}"


@dataclass
class Row:
    target: str  # DIRECT or a variant's name
    scenario: Scenario
    load: LoadResult
    server_cpu_s: float  # CPU used by the server's process tree during the scenario

    @property
    def cpu_ms_per_req(self) -> float:
        return self.server_cpu_s * 1000 / self.load.requests if self.load.requests else 0.0


@dataclass
class TargetInfo:
    """Per-variant facts besides the rows."""

    name: str
    description: str
    startup_s: float = 0.0
    rss_mib: float = 0.0
    pss_mib: float = 0.0
    processes: int = 0
    requests_sent: int = 0  # completed ones; wrk doesn't count those cut off at the deadline
    call_log_rows: int | None = None
    notes: list[str] = field(default_factory=list)


def _num(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def _signed(value: float, digits: int) -> str:
    return f"{value:+,.{digits}f}"


def rows_table(rows: list[Row]) -> str:
    base = {r.scenario: r for r in rows if r.target == DIRECT}
    out = [
        "| target | scenario | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | server CPU ms/req | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ref = base.get(r.scenario) if r.target != DIRECT else None
        added50 = _signed(r.load.p50_ms - ref.load.p50_ms, 2) if ref else "–"
        added99 = _signed(r.load.p99_ms - ref.load.p99_ms, 2) if ref else "–"
        out.append(
            f"| {r.target} | {r.scenario.label} | {_num(r.load.rps, 1)} | {_num(r.load.p50_ms, 2)} "
            f"| {_num(r.load.p99_ms, 2)} | {added50} | {added99} | {_num(r.cpu_ms_per_req, 3)} | {r.load.errors} |"
        )
    return "\n".join(out)


def variant_delta_table(rows: list[Row], first: str, others: list[str]) -> str:
    """What each later variant adds per request over the first one (e.g. limits and a budget)."""
    ref = {r.scenario: r for r in rows if r.target == first}
    out = [
        f"| variant | scenario | Δ CPU ms/req vs {first} | Δ p50 ms vs {first} | req/s vs {first} |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        if r.target not in others or r.scenario not in ref:
            continue
        b = ref[r.scenario]
        ratio = f"{r.load.rps / b.load.rps:.2f}×" if b.load.rps else "–"
        out.append(
            f"| {r.target} | {r.scenario.label} | {_signed(r.cpu_ms_per_req - b.cpu_ms_per_req, 3)} "
            f"| {_signed(r.load.p50_ms - b.load.p50_ms, 2)} | {ratio} |"
        )
    return "\n".join(out)


def render(header: list[str], rows: list[Row], targets: list[TargetInfo]) -> str:
    parts = ["## Gateway overhead benchmark", "", *header, "", rows_table(rows), ""]
    parts += [
        "added = this row minus the direct row of the same scenario (the mock without the gateway). "
        "server CPU = user+system time of the server's process tree (granian and its worker; the mock "
        "for direct rows) over the scenario, divided by completed requests; ~1000/(CPU ms/req) req/s "
        "per core is the ceiling. errors = non-2xx + socket errors + timeouts.",
        "",
        "| variant | config | startup s | RSS after run | PSS | processes | call log rows / requests completed |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for t in targets:
        logged = "?" if t.call_log_rows is None else f"{t.call_log_rows:,}"
        parts.append(
            f"| {t.name} | {t.description} | {t.startup_s:.1f} | {t.rss_mib:,.0f} MiB | {t.pss_mib:,.0f} MiB "
            f"| {t.processes} | {logged} / {t.requests_sent:,} |"
        )
    if len(targets) > 1:
        parts += ["", variant_delta_table(rows, targets[0].name, [t.name for t in targets[1:]])]
    notes = [n for t in targets for n in t.notes]
    if notes:
        parts += ["", *(f"- {n}" for n in notes)]
    return "\n".join(parts) + "\n"
