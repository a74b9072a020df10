"""The native scanner (routing/policies/_scan.c) against the Python passes it stands for: the same
findings in the same order, on the labelled corpus and on generated text built to reach every branch of
both (separators, look-alikes, context words, Latin-1 characters, values run together); the North
American plan's table against the pattern it is spelled out from; resolve and the secret hints against
their Python forms. Pure functions: no database, no server."""

from __future__ import annotations

import random

import phonenumbers
import pytest

from routing.policies import detectors
from routing.policies.detectors import Scanner, lower, nanp_table, resolve_py, secret_hints
from routing.policies.spec import BUILTIN_DETECTORS
from tests.helpers.pii_corpus import LOOK_ALIKES, SECRET_CONTEXT, TEMPLATES, TRUE_VALUES

native = detectors.native

SUBSETS = [
    BUILTIN_DETECTORS,
    ("phone",),
    ("card", "us_ssn"),
    ("ip",),
    ("email", "iban"),
    ("secret", "phone", "ip"),
]


def both(scanner: Scanner, text: str) -> tuple[list, list]:
    """What the scanner finds with its native passes, and with the Python ones."""
    fast = scanner.scan(text)
    flags, scanner.native_flags = scanner.native_flags, -1
    try:
        slow = scanner.scan(text)
    finally:
        scanner.native_flags = flags
    return fast, slow


def test_make_builds_the_native_scanner_and_scanners_use_it():
    # Without it every scan takes the Python passes, 5 to 30 times slower: `make` builds it.
    assert native is not None
    assert detectors.native_ready()
    assert Scanner(BUILTIN_DETECTORS).native_flags > 0


def test_the_native_flag_bits_are_the_python_ones():
    assert (native.H_PKEY, native.H_JWT, native.H_PROVKEY, native.H_BEARER, native.H_V6) == (
        detectors.H_PKEY,
        detectors.H_JWT,
        detectors.H_PROVKEY,
        detectors.H_BEARER,
        detectors.H_V6,
    )
    assert [bit for _, bit in detectors._KW_BITS] == [
        native.H_KEY,
        native.H_SECRET,
        native.H_TOKEN,
        native.H_PASSW,
        native.H_PWD,
    ]


def test_the_corpus_gives_the_same_findings_both_ways():
    texts = list(LOOK_ALIKES)
    for values in TRUE_VALUES.values():
        texts += [template.format(value) for value in values for template in TEMPLATES]
    texts += [template.format(value) for template, value in SECRET_CONTEXT]
    scanners = [Scanner(subset) for subset in SUBSETS]
    found = 0
    for text in texts:
        for scanner in scanners:
            fast, slow = both(scanner, text)
            assert fast == slow, text
            found += len(fast)
    assert found > 300  # the corpus's values are found, not just agreed on


# ---- generated text ----------------------------------------------------------------------------------

WORDS = [
    "call", "Call", "CALL", "phone:", "tel.", "mobile", "order", "ORDER", "id", "ID:", "ref", "reference", "no.",
    "No.", "#", "version", "Version ", "release", "v", "V", "IBAN", "key", "API_KEY=", "token", "Bearer",
    "secret", "password:", "the", "at", "x", "é", "Über", "naïve", "\xa0", "\x85", "\n", "\t", "  ", "\x1c",
    "sk-", "AKIA", "eyJ", "ghp_", "github_pat_", "sk_live_", "xoxb-", "::", "fe80::1", "2001:db8::8a2e:370:7334",
]  # fmt: skip
SEPARATORS = ["", " ", " ", "  ", "-", ".", "/", "(", ")", "+", "@", ":", ",", "_", "%", "\n", "é", "\xa0"]
FILLER = "0123456789 -./()+@:_%#abcdeXYZ"


def _digits(rnd: random.Random, n: int) -> str:
    return "".join(rnd.choice("0123456789") for _ in range(n))


def _luhn_complete(rnd: random.Random, prefix: str, length: int) -> str:
    body = prefix + _digits(rnd, length - len(prefix) - 1)
    for check in "0123456789":
        if detectors.luhn_valid(body + check):
            return body + check
    raise AssertionError


def _piece(rnd: random.Random) -> str:  # noqa: C901 - one branch per kind of value, on purpose
    kind = rnd.randrange(16)
    d = lambda n: _digits(rnd, n)  # noqa: E731
    sep = rnd.choice(["-", ".", " ", "/", ""])
    if kind == 0:
        return d(rnd.randint(1, 22))
    if kind == 1:
        area, exchange = rnd.choice("23456789") + d(2), rnd.choice("0123456789") + d(2)
        return rnd.choice(
            [
                f"{area}-{exchange}-{d(4)}",
                f"({area}) {exchange}-{d(4)}",
                f"+1 {area} {exchange} {d(4)}",
                f"1{area}{exchange}{d(4)}",
                f"{area}.{exchange}.{d(4)}",
                f"{area}{sep}{exchange}{sep}{d(4)}",
                f"+{d(2)} {d(2)} {d(4)} {d(4)}",
                f"00{d(2)} {d(2)} {d(6)}",
                f"0{d(2)} {d(4)} {d(4)}",
                f"+44 20 7946 {d(4)}",
                f"+{d(1)}-{d(9)}",
                f"({d(3)}){d(3)}-{d(4)}",
            ]
        )
    if kind == 2:
        prefix = rnd.choice(["4", "51", "55", "2221", "34", "37", "6011", "65", "3528", "36", "62", "50", "9"])
        length = rnd.choice([12, 13, 14, 15, 16, 16, 16, 19])
        number = _luhn_complete(rnd, prefix, max(length, len(prefix) + 2))
        if rnd.random() < 0.5:
            return number
        groups = [number[i : i + 4] for i in range(0, len(number), 4)]
        return rnd.choice([" ", "-", ".", " - "]).join(groups)
    if kind == 3:
        area = rnd.choice(["000", "666", "900", "078", d(3), d(3)])
        return f"{area}{sep}{rnd.choice(['00', d(2)])}{sep}{rnd.choice(['0000', d(4)])}"
    if kind == 4:
        value = rnd.choice(TRUE_VALUES.get("iban", ["DE89 3704 0044 0532 0130 00"]))
        if rnd.random() < 0.3:
            value = value.replace(" ", "")
        if rnd.random() < 0.3:
            i = rnd.randrange(len(value))
            value = value[:i] + rnd.choice("0123456789 A") + value[i + 1 :]
        return value
    if kind == 5:
        local = rnd.choice(["jane.doe", "a", ".x", "-", "o'neil", "x" * rnd.randint(60, 70), d(3) + "j.d"])
        domain = rnd.choice(
            ["example.com", "ex-ample.co.uk", "a.b", "a.bc", "x.y.z.museum", "1a.2b", "e.x.", "-a.com", "ex.c0m"]
        )
        return f"{local}@{domain}" + rnd.choice(["", ".", "-", "5", "_", "@b.com"])
    if kind == 6:
        octets = [rnd.choice([str(rnd.randint(0, 255)), str(rnd.randint(0, 999)), "0" + d(1), d(4)]) for _ in range(4)]
        return rnd.choice(["", "version ", "v", "Release\t", "V\n"]) + ".".join(octets[: rnd.choice([3, 4, 4, 5])])
    if kind == 7:
        return rnd.choice(
            [f"{d(4)}-{d(2)}-{d(2)}", f"{d(2)}/{d(2)}/{d(4)}", f"{d(1)}.{d(1)}.{d(2)}", f"{d(3)}-{d(1)}-{d(2)}"]
        )
    if kind == 8:
        return "".join(rnd.choice(FILLER) for _ in range(rnd.randint(1, 12)))
    if kind == 9:
        return rnd.choice(WORDS)
    if kind == 10:
        return rnd.choice(rnd.choice(list(TRUE_VALUES.values())))
    if kind == 11:
        return rnd.choice(LOOK_ALIKES)
    if kind == 12:
        return rnd.choice(["sk-", "AKIA", "ghp_", "sk_live_", "github_pat_", "xoxb-"]) + "".join(
            rnd.choice("ABCdef0123456789_-") for _ in range(rnd.randint(10, 40))
        )
    if kind == 13:
        return f"+{d(rnd.randint(1, 3))}{rnd.choice([' ', '-', '.'])}{d(rnd.randint(5, 15))}"
    if kind == 14:
        return "(" + d(rnd.randint(3, 12)) + rnd.choice([")", "", "))"]) + d(rnd.randint(0, 8))
    return " ".join(d(rnd.randint(1, 7)) for _ in range(rnd.randint(2, 6)))


def generated_texts(seed: int, count: int) -> list[str]:
    rnd = random.Random(seed)
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rnd.randint(1, 14)):
            parts.append(_piece(rnd))
            parts.append(rnd.choice(SEPARATORS))
        text = "".join(parts)
        if rnd.random() < 0.2:  # and values run into each other
            chars = list(text)
            for _ in range(rnd.randint(1, 4)):
                chars.insert(rnd.randrange(len(chars) + 1), rnd.choice(FILLER + "éü\xa0"))
            text = "".join(chars)
        texts.append(text)
    return texts


@pytest.mark.parametrize("subset", SUBSETS, ids=lambda s: "+".join(s) if len(s) < 7 else "all")
def test_generated_text_gives_the_same_findings_both_ways(subset):
    scanner = Scanner(subset)
    found = 0
    for text in generated_texts(seed=19, count=1500):
        fast, slow = both(scanner, text)
        assert fast == slow, repr(text)
        found += len(fast)
    assert found > 40


def test_wide_text_is_read_through_its_stand_in_and_gives_the_same_findings():
    # Emoji, CJK, zero-width and typographic spaces (wider than one byte): read natively, same findings.
    scanner = Scanner(BUILTIN_DETECTORS)
    text = "✓ call 415-555-2671 or mail jane@example.com\u2003漢字 4111 1111 1111 1111 — 10.0.0.1\u200b"
    assert native.hints(text) is not None
    fast, slow = both(scanner, text)
    assert fast == slow
    assert [d for _, _, d in fast] == ["phone", "email", "card", "ip"]
    for text in generated_texts(seed=5, count=1500):
        wide = text.replace("é", "€").replace("\xa0", "\u3000").replace("x", "漢")
        fast, slow = both(scanner, wide)
        assert fast == slow, repr(wide)


@pytest.mark.parametrize(
    "odd",
    [
        "\u0665",  # ARABIC-INDIC DIGIT FIVE: \d matches it
        "\u212a",  # KELVIN SIGN: (?i) reads it as "k", lower() makes it "k"
        "\u017f",  # LATIN SMALL LETTER LONG S: (?i) reads it as "s"
        "\u0130",  # LATIN CAPITAL LETTER I WITH DOT ABOVE
        "\u0131",  # LATIN SMALL LETTER DOTLESS I
    ],
)
def test_text_with_a_character_the_stand_in_cannot_hold_takes_the_python_passes(odd):
    scanner = Scanner(BUILTIN_DETECTORS)
    text = f"order{odd} call 415-555-2671 {odd}ey: Zq8r7Xk2Lm9Pw3Vt6Ns4 4111 1111 1111 1111"
    assert native.hints(text) is None and native.scan(text, scanner.native_flags, []) is False
    assert "card" in [d for _, _, d in scanner.scan(text)]


# ---- the parts ---------------------------------------------------------------------------------------


def test_the_north_american_table_gives_the_patterns_verdicts():
    assert nanp_table() is not None
    scanner = Scanner(["phone"])
    rnd = random.Random(1)
    numbers = [f"{area}{_digits(rnd, 7)}" for area in range(200, 1000) for _ in range(12)]
    numbers += [f"{rnd.randint(200, 999)}{rnd.randint(200, 999)}{_digits(rnd, 4)}" for _ in range(5000)]
    valid = 0
    for national in numbers:
        text = f"call {national[:3]}-{national[3:6]}-{national[6:]}"
        if national[3] in "01":
            continue
        expected = detectors._nanp_valid(national)
        assert bool(scanner.scan(text)) == expected, national
        valid += expected
        if national.startswith("415"):
            assert expected == phonenumbers.is_valid_number(phonenumbers.parse(national, "US"))
    assert 0.2 * len(numbers) < valid < 0.9 * len(numbers)


def test_resolve_keeps_what_the_python_one_keeps():
    rnd = random.Random(7)
    for _ in range(300):
        hits = []
        for _ in range(rnd.randint(0, 30)):
            start = rnd.randint(0, 60)
            hits.append((start, start + rnd.randint(1, 12), rnd.choice(["email", "phone", "ip", "terms"])))
        assert native.resolve(list(hits)) == resolve_py(list(hits))


def test_the_secret_hints_are_the_python_ones():
    edges = ["-----BEGIN KEY", "eyJ", "BeArEr", "Pwd", "PASSWORD", "secret", "tokens", "a:f", "::", "x:", "k_test_"]
    for text in [*generated_texts(seed=3, count=800), *edges]:
        hints = native.hints(text)
        if hints is None:
            continue
        mask = detectors.H_V6 if detectors._V6_HINT.search(text) else 0
        assert hints & ~(native.H_AT | native.H_DOT) == secret_hints(text, lower(text)) | mask, repr(text)
        assert bool(hints & native.H_AT) == ("@" in text)
        assert bool(hints & native.H_DOT) == ("." in text)


def test_provider_keys_are_found_where_their_hints_are():
    text = " ".join(
        [
            "sk-" + "a" * 24,
            "x github_pat_" + "B" * 30,
            "rk_live_" + "c" * 16,
            "AKIA" + "D" * 16,
            "-sk-" + "e" * 24,  # after a dash: not a key
            "xoxb-" + "1" * 10,
        ]
    )
    expected = [(m.start(), m.end()) for m in detectors._PROVKEY.finditer(text)]
    assert len(expected) == 5
    assert [(s, e) for s, e, _ in Scanner(["secret"]).scan(text)] == expected
