"""Detector precision and recall on the labelled corpus (tests/helpers/pii_corpus.py), printed per
detector. Every true value is written into several sentences; every look-alike must stay unreported."""

from __future__ import annotations

from routing.policies.detectors import Scanner
from routing.policies.spec import BUILTIN_DETECTORS as DETECTORS
from tests.helpers.pii_corpus import LOOK_ALIKES, SECRET_CONTEXT, TEMPLATES, TRUE_VALUES

RECALL_FLOOR = 0.9
PRECISION_FLOOR = 0.9


def _labelled() -> list[tuple[str, list[tuple[int, int, str]]]]:
    """(text, [(start, end, detector)]) for every sentence of the corpus."""
    cases = []
    for detector, values in TRUE_VALUES.items():
        for value in values:
            for template in TEMPLATES:
                text = template.format(value)
                start = text.index(value)
                cases.append((text, [(start, start + len(value), detector)]))
    for template, value in SECRET_CONTEXT:
        text = template.format(value)
        start = text.index(value)
        cases.append((text, [(start, start + len(value), "secret")]))
    cases += [(text, []) for text in LOOK_ALIKES]
    return cases


def test_precision_and_recall_per_detector():
    scanner = Scanner(DETECTORS)
    tp = dict.fromkeys(DETECTORS, 0)
    fp = dict.fromkeys(DETECTORS, 0)
    fn = dict.fromkeys(DETECTORS, 0)
    misses: list[str] = []
    for text, expected in _labelled():
        found = set(scanner.scan(text))
        for hit in expected:
            if hit in found:
                tp[hit[2]] += 1
                found.discard(hit)
            else:
                fn[hit[2]] += 1
                misses.append(f"missed {hit[2]}: {text!r} (found {sorted(found)})")
        for _start, _end, detector in found:
            fp[detector] += 1
            misses.append(f"false {detector}: {text!r}")
    lines = ["", f"{'detector':<8} {'precision':>9} {'recall':>7}  (tp fp fn)"]
    failures = []
    for detector in DETECTORS:
        precision = tp[detector] / ((tp[detector] + fp[detector]) or 1)
        recall = tp[detector] / ((tp[detector] + fn[detector]) or 1)
        lines.append(f"{detector:<8} {precision:>9.3f} {recall:>7.3f}  ({tp[detector]} {fp[detector]} {fn[detector]})")
        if precision < PRECISION_FLOOR or recall < RECALL_FLOOR:
            failures.append(detector)
    print("\n".join(lines + misses))
    assert not failures, f"below the floors: {failures}\n" + "\n".join(misses)
    assert sum(tp.values()) >= 200  # the corpus is not empty by accident
