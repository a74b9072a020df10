"""The markdown report: one table of all rows, then memory and what each extra variant adds."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.bench.load import LoadResult

DIRECT = "direct (mock)"
PLAIN = "gateway"  # the variant every other one is compared with (tests/bench/gateway.py)
PEER = "litellm"  # LiteLLM's proxy, when installed (tests/bench/peer.py)
PLAIN_REDIS = "gateway+redis"  # the plain config with REDIS_URL (tests/bench/gateway.py)
REDIS_VARIANTS = ("everything", "gateway+limits+redis", "cache-hit")


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
    worker_rss_mib: float = 0.0  # the largest process of the tree: the worker
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


def _ratio(value: float, ref: float) -> str:
    return f"{value / ref:.2f}×" if ref else "–"


def _short(name: str) -> str:
    return "plain" if name == PLAIN else name


def variant_delta_table(rows: list[Row], first: str, others: list[str]) -> str:
    """What each other variant adds per request over the reference one (e.g. limits and a budget)."""
    ref = {r.scenario: r for r in rows if r.target == first}
    out = [
        f"| variant | scenario | Δ CPU ms/req vs {first} | CPU × {_short(first)} | Δ p50 ms vs {first} "
        f"| req/s vs {first} |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.target not in others or r.scenario not in ref:
            continue
        b = ref[r.scenario]
        out.append(
            f"| {r.target} | {r.scenario.label} | {_signed(r.cpu_ms_per_req - b.cpu_ms_per_req, 3)} "
            f"| {_ratio(r.cpu_ms_per_req, b.cpu_ms_per_req)} | {_signed(r.load.p50_ms - b.load.p50_ms, 2)} "
            f"| {_ratio(r.load.rps, b.load.rps)} |"
        )
    return "\n".join(out)


def cpu_ratio_table(rows: list[Row], first: str, names: list[str]) -> str:
    """CPU ms/req of every variant as a multiple of the reference, one column per scenario.

    The figure the issues budget against ("at most 1.25x plain"): CPU per request is steady on a noisy
    machine where req/s and latency are not, and both sides ran in the same session.
    """
    ref = {r.scenario: r for r in rows if r.target == first}
    scenarios = list(ref)
    by_key = {(r.target, r.scenario): r for r in rows}
    out = [
        f"| variant | {' | '.join(f'{s.label} × {_short(first)}' for s in scenarios)} |",
        f"|---|{'---:|' * len(scenarios)}",
    ]
    for name in names:
        cells = []
        for s in scenarios:
            r = by_key.get((name, s))
            cells.append(_ratio(r.cpu_ms_per_req, ref[s].cpu_ms_per_req) if r else "–")
        out.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(out)


def peer_table(rows: list[Row], peer: str, names: list[str]) -> str:
    """How many times our CPU per request the peer (LiteLLM) spends, and its req/s as a share of ours,
    scenario by scenario (issue 22: at least 10x less CPU, JSON and SSE, plain and everything on)."""
    theirs = {r.scenario: r for r in rows if r.target == peer}
    scenarios = list(theirs)
    by_key = {(r.target, r.scenario): r for r in rows}
    out = [
        f"| ours | {' | '.join(f'{peer} CPU ÷ ours, {s.label}' for s in scenarios)} | req/s × {peer} (best) |",
        f"|---|{'---:|' * (len(scenarios) + 1)}",
    ]
    for name in names:
        cells, speedups = [], []
        for s in scenarios:
            r = by_key.get((name, s))
            cells.append(_ratio(theirs[s].cpu_ms_per_req, r.cpu_ms_per_req) if r else "–")
            if r and theirs[s].load.rps:
                speedups.append(r.load.rps / theirs[s].load.rps)
        best = f"{max(speedups):.1f}×" if speedups else "–"
        out.append(f"| {_short(name)} | {' | '.join(cells)} | {best} |")
    return "\n".join(out)


def render(header: list[str], rows: list[Row], targets: list[TargetInfo]) -> str:
    parts = ["## Gateway overhead benchmark", "", *header, "", rows_table(rows), ""]
    parts += [
        "added = this row minus the direct row of the same scenario (the mock without the gateway). "
        "server CPU = user+system time of the server's process tree (granian and its worker; the mock "
        "for direct rows) over the scenario, divided by completed requests; ~1000/(CPU ms/req) req/s "
        "per core is the ceiling. errors = non-2xx + socket errors + timeouts.",
        "",
        "| variant | config | startup s | RSS after run | PSS | processes | worker RSS (target 150) "
        "| call log rows / requests completed |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for t in targets:
        logged = "?" if t.call_log_rows is None else f"{t.call_log_rows:,}"
        parts.append(
            f"| {t.name} | {t.description} | {t.startup_s:.1f} | {t.rss_mib:,.0f} MiB | {t.pss_mib:,.0f} MiB "
            f"| {t.processes} | {t.worker_rss_mib:,.0f} MiB | {logged} / {t.requests_sent:,} |"
        )
    if len(targets) > 1:
        # Ratios are against the plain gateway when it ran, so "routing adds X %" and "everything on
        # costs Y x plain" read straight off the table; otherwise against the first variant run.
        names = [t.name for t in targets]
        ref = PLAIN if PLAIN in names else names[0]
        others = [n for n in names if n != ref]
        parts += ["", variant_delta_table(rows, ref, others), "", cpu_ratio_table(rows, ref, others)]
        if PLAIN_REDIS in names:
            # The policies' own cost: against the plain config in the same deployment shape (the call log
            # through the Redis stream), which the variants with REDIS_URL share.
            with_redis = [n for n in names if n in REDIS_VARIANTS]
            parts += ["", cpu_ratio_table(rows, PLAIN_REDIS, with_redis)]
    peers = [t.name for t in targets if t.name == PEER]
    if peers:
        parts += ["", peer_table(rows, PEER, [t.name for t in targets if t.name != PEER])]
    notes = [n for t in targets for n in t.notes]
    if notes:
        parts += ["", *(f"- {n}" for n in notes)]
    return "\n".join(parts) + "\n"
