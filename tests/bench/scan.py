"""The data policy's own cost, measured in-process: what the PII step's on_request costs per request on
the benchmark's prompt and per KB of prompt (budget: at most 0.3 CPU ms/request on the bench prompt).

Run as `python -m tests.bench.scan` (the bench runs it in a subprocess, so that Django is set up there
and not in the driver); prints one JSON object.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import time
from collections.abc import Callable

import orjson

# The benchmark's "everything" variant uses this policy (tests/bench/gateway.py, PII_AND_CACHE_YAML).
FULL_POLICY = {
    "mode": "enforce",
    "detectors": {
        "email": "pseudonymize",
        "phone": "redact",
        "card": "block",
        "iban": "redact",
        "us_ssn": "redact",
        "ip": "mask",
        "secret": "block",
    },
    "custom": [{"name": "order_id", "pattern": r"ORD-\d{6}", "action": "redact"}],
    "terms": {"words": ["Project Falcon"], "action": "redact"},
    "scan_responses": False,
}
# Ordinary business prose with numbers, dates and versions (look-alikes the validators must reject).
PROSE = (
    "The quarterly report for 2026-09-30 covers revenue growth across all regions, with particular attention "
    "to the enterprise segment where renewals improved by 12 percent compared with last year (v2.4.1 rollout, "
    "room 1204, order 88231). Please summarise the key points for the board and suggest three actions. "
)


def _cpu_ms(step, payload: dict, rounds: int) -> float:
    from proxy.call import Call

    loop = asyncio.new_event_loop()
    best = float("inf")
    try:
        for _ in range(3):
            started = time.process_time()
            for _ in range(rounds):
                fresh = orjson.loads(orjson.dumps(payload))
                call = Call("bench", "chat/completions", 0.0)
                loop.run_until_complete(step.on_request(call, fresh))
            best = min(best, (time.process_time() - started) / rounds)
    finally:
        loop.close()
    return best * 1000


def _adversarial(rnd: random.Random) -> dict[str, Callable[[], str]]:
    """One unit of each kind of adversarial text (issue 19): runs the detectors must read and refuse, or
    values they must find, each unit different so that no cache helps."""

    def digits(n: int) -> str:
        return "".join(rnd.choices("0123456789", k=n))

    return {
        "digit runs": lambda: digits(7) + " ",
        "phone-like": lambda: f"call {rnd.randint(200, 999)}-{rnd.randint(200, 999)}-{digits(4)} ",
        "emails": lambda: f"{digits(3)}jane.doe{digits(2)}@example{digits(1)}.com ",
        "IPv4": lambda: f"{rnd.randint(1, 254)}.{rnd.randint(0, 254)}.{rnd.randint(0, 254)}.{rnd.randint(0, 254)} ",
        "base64": lambda: base64.b64encode(rnd.randbytes(3000)).decode() + " ",
        "dates": lambda: f"{rnd.randint(1990, 2030)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d} ",
        "prose": lambda: PROSE,
    }


def adversarial_ms_per_mib(size: int = 256 * 1024) -> dict[str, float]:
    """CPU ms per MiB of each adversarial text, every built-in detector of the full policy on."""
    from routing.policies.engine import compile_policy

    scanner = compile_policy(FULL_POLICY).scanner
    rnd = random.Random(19)
    out = {}
    for name, unit in _adversarial(rnd).items():
        parts, n = [], 0
        while n < size:
            parts.append(unit())
            n += len(parts[-1])
        text = "".join(parts)[:size]
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            scanner.scan(text)
            best = min(best, time.process_time() - started)
        out[name] = best * 1000 * (1 << 20) / size
    return out


def guardrail_ms_per_kb() -> dict[str, float]:
    """The guardrails' own CPU per KB of text (issue 24: the pattern pack at most 0.2 ms, the embedding
    classifier at most 15 ms): the pattern pack on prose and on the injection corpus's attacks, as a user turn
    and as a tool result; the classifier's arithmetic on random 1,536-dimension embeddings (the model's own
    work is done by its server)."""
    from routing.policies import injection_knn
    from routing.policies.injection import injection_score
    from tests.routing.injection_corpus import (
        TOOL_CLEAN,
        TOOL_PLANTED,
        USER_ATTACKS,
        USER_BENIGN_DISCUSSION,
        USER_BENIGN_ORDINARY,
    )

    def text_of(items) -> str:
        return "\n".join(i if isinstance(i, str) else i[0] for i in items)

    attacks = text_of(USER_ATTACKS) + "\n" + text_of(TOOL_PLANTED)
    mixed = "\n".join(
        text_of(items)
        for items in (USER_ATTACKS, USER_BENIGN_DISCUSSION, USER_BENIGN_ORDINARY, TOOL_PLANTED, TOOL_CLEAN)
    )
    texts = {
        "labelled corpus, user": (mixed * 10)[: 100 * 1024],
        "labelled corpus, tool": (mixed * 10)[: 100 * 1024],
        "prose, user": (PROSE * 600)[: 100 * 1024],
        "prose, tool": (PROSE * 600)[: 100 * 1024],
        "attacks only, user": (attacks * 10)[: 100 * 1024],
        "attacks only, tool": (attacks * 10)[: 100 * 1024],
    }
    out = {}
    for name, text in texts.items():
        source = name.split(", ")[1]
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            for i in range(0, len(text), 1024):  # per request-sized text: clusters and caps apply per text
                injection_score(text[i : i + 1024], source=source)
            best = min(best, time.process_time() - started)
        out[f"pattern pack, {name}"] = best * 1000 / (len(text) / 1024)
    rnd = random.Random(24)
    classifier = injection_knn.build([[rnd.gauss(0, 1) for _ in range(1536)] for _ in injection_knn.EXAMPLES])
    pieces = injection_knn.pieces([(PROSE * 20)[: 16 * 1024]])
    vectors = [[rnd.gauss(0, 1) for _ in range(1536)] for _ in pieces]
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        max(classifier.score(v) for v in vectors)
        best = min(best, time.process_time() - started)
    out["embedding classifier (1,536 dimensions)"] = best * 1000 / 16
    return out


def measure() -> dict:
    from proxy.steps.pii import pii_step
    from routing.policies.spec import normalize_pii
    from tests.bench.payloads import JSON_MODEL, request_body

    normalize_pii(FULL_POLICY)  # refuses an invalid policy with a clear message
    step = pii_step(FULL_POLICY)
    out: dict = {"bench_prompt_ms": _cpu_ms(step, orjson.loads(request_body(JSON_MODEL, stream=False)), 2000)}
    for kb in (1, 4, 16):
        text = (PROSE * (kb * 1024 // len(PROSE) + 1))[: kb * 1024]
        payload = {"model": JSON_MODEL, "messages": [{"role": "user", "content": text}]}
        out[f"{kb}kb_ms"] = _cpu_ms(step, payload, max(2000 // (kb * 4), 20))
    out["per_kb_ms"] = out["16kb_ms"] / 16
    out["adversarial_ms_per_mib"] = adversarial_ms_per_mib()
    out["guardrail_ms_per_kb"] = guardrail_ms_per_kb()
    return out


def report_lines(result: dict) -> list[str]:
    return [
        "PII scan, full policy (in-process, CPU ms per request): "
        f"{result['bench_prompt_ms']:.3f} on the bench prompt (budget 0.3); "
        f"1 KB {result['1kb_ms']:.3f}, 4 KB {result['4kb_ms']:.3f}, 16 KB {result['16kb_ms']:.3f} "
        f"({result['per_kb_ms']:.3f} ms per KB).",
        "PII scan of adversarial text, every built-in detector on (CPU ms per MiB; target 20): "
        + ", ".join(f"{name} {ms:.0f}" for name, ms in result["adversarial_ms_per_mib"].items())
        + ".",
        "Guardrails, CPU ms per KB (targets: pattern pack 0.2, embedding classifier 15): "
        + ", ".join(f"{name} {ms:.3f}" for name, ms in result["guardrail_ms_per_kb"].items())
        + ".",
    ]


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    os.environ.setdefault("GATEWAY_DEV", "1")
    import django

    django.setup()
    print(orjson.dumps(measure()).decode())
