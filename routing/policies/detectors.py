"""Built-in PII and secret detectors: fast patterns find candidates, validators keep look-alikes out.

The patterns are compiled once (stdlib `re`: they are ours and written not to backtrack badly) and a
policy's `Scanner` runs only the families it enables. Each family either starts with a literal or a
narrow character class, so that CPython's matcher skips ahead in C, or runs only after a cheap
substring check ("@" for emails, "sk-" for provider keys): one alternation of everything would try
every branch at every position, about 0.5 ms per KB. Validators (Luhn and issuer ranges,
python-stdnum, phonenumbers, ipaddress, an entropy floor) run only on candidates. Tenants' own
regexes are not here: they run under a time bound with the `regex` module (routing.policies.engine).
"""

from __future__ import annotations

import array
import functools
import ipaddress
import math
import re
from collections.abc import Iterable
from typing import Any

import phonenumbers
from stdnum import iban as stdnum_iban

from routing.policies.spec import NER_DETECTOR

try:
    # The dense passes in C (routing/policies/_scan.c, built by `make`): the same findings as the Python
    # passes below, which run where it is not built and on the rare text it hands back (see _scan.c).
    from routing.policies import _scan
except ImportError:  # pragma: no cover - a checkout where `make` has not built it
    _scan = None  # type: ignore[assignment]
native: Any = _scan

# Names of people (NER_DETECTOR, offered only where Presidio is installed) count from this score.
NER_MIN_SCORE = 0.6
_ner_engine = None


def ner_engine() -> Any:  # presidio_analyzer.AnalyzerEngine
    """The process's Presidio analyzer, created on first use (it loads a language model: seconds)."""
    global _ner_engine
    if _ner_engine is None:
        from presidio_analyzer import AnalyzerEngine

        _ner_engine = AnalyzerEngine()
    return _ner_engine


# Regions tried, in order, for a phone number written without its country code. A number with "+"
# (or "00") is parsed as international and validated against its own country's plan; a national
# number without a trunk "0" is read in the North American plan (_nanp_valid), one with it in these.
TRUNK_ZERO_REGIONS = ("GB", "DE", "FR", "IT", "ES", "NL", "AU", "IN")

Finding = tuple[int, int, str]  # start, end, detector

# Each family of detectors is one pattern that starts with a literal or a narrow character class
# (CPython's `re` then skips ahead in C) or runs only after a cheap substring check: a whole-text
# alternation would try every branch at every position, about 0.5 ms per KB.
_PKEY = re.compile(
    r"-----BEGIN[A-Z ]{0,30}PRIVATE KEY-----(?:[\s\S]{0,20000}?-----END[A-Z ]{0,30}PRIVATE KEY-----|[A-Za-z0-9+/=\s]*)"
)
_JWT = re.compile(r"eyJ(?<![\w-]eyJ)[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}")
# Provider keys with a recognisable prefix: OpenAI/Anthropic/this gateway (sk-...), GitHub, Stripe,
# Slack, Google, AWS access key ids. Run when one of the prefixes occurs.
_PROVKEY_HINTS = (
    "sk-",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "_pat_",
    "k_live_",
    "k_test_",
    "xox",
    "AIza",
    "AKIA",
    "ASIA",
    "ABIA",
    "ACCA",
)
_PROVKEY = re.compile(
    r"(?<![\w-])(?:sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}|xox[abposr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}"
    r"|(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16})(?![\w-])"
)
# What the secret patterns and the IPv6 pass look for before they run, as bits (the native module's
# `hints` computes the same mask in one pass; secret_hints is the Python one).
H_PKEY, H_JWT, H_PROVKEY, H_BEARER = 1, 2, 4, 8
_KW_BITS = (("key", 16), ("secret", 32), ("token", 64), ("passw", 128), ("pwd", 256))
H_V6 = 512
_BEARER = re.compile(r"(?i:bearer)\s+([A-Za-z0-9._~+/-]{16,}=*)")
# A long random-looking value right after a word like key/secret/token/password, matched on the
# lower-cased text (a case-insensitive alternation is several times slower).
_KW_HINTS = ("key", "secret", "token", "passw", "pwd")
# What may follow one of those words before the value: "api_key_id", "tokens", "password:".
_KW_TAIL = re.compile(r"[a-z_-]{0,12}?\b[\"']?(?:\s*(?:[:=]|=>|\bis\b|\bwas\b)\s*|\s+)[\"']?([a-z0-9_+/=.~-]{16,})")
# Emails, run only when the text has an "@". The look-behind after the first character makes every
# position inside a word fail at once, so each word is read once (linear, in C); a local part longer
# than 64 characters never reaches its "@" and is not an address.
_EMAIL = re.compile(
    r"[A-Za-z0-9._%+-](?<![A-Za-z0-9._%+-][A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{0,63}"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
_IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_V6_HINT = re.compile(r":[0-9A-Fa-f:]")
_IPV6 = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:]{2,39}(?![\w:])")
# Digit runs with the separators phones, cards, SSNs and IPv4 addresses are written with; classified
# in Python. The look-behind sits after the first character so that the class can skip ahead.
# Only runs with enough digits to be one of them (9 or more, 8 after a "+": the look-ahead), written as
# values are: one run of digits, or groups of at most 6 digits (cards 4-4-4-4 or 4-6-5, phones, SSNs
# 3-2-4), or a country code and a national number. Anything else ("1234567", "1234567 1234567",
# "2026") is refused in C, in one failed attempt per run, never reaching Python. The possessive
# quantifiers say what is true anyway (a digit is never a separator) and spare the matcher retries.
# Dates and IPv4 addresses are refused at their first digit (their own checks find them, or not), so
# that "2026-09-30 2026-10-01 ..." costs no Python either.
_NUM = re.compile(
    r"[+(\d](?<![\w+.\-/@:][+(\d])(?!\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\d.]))"
    r"(?!\d{3}[-/.]\d{1,2}[-/.]\d{1,2}(?!\d)|\d?[-/.]\d{1,2}[-/.]\d{2,4}(?!\d))"
    r"(?=(?:[ \-.()/]{0,3}+\d){8})"
    r"(?:\d{8,18}+|\d{0,5}+(?:[ \-.()/]{1,3}+\d{1,6}+){1,5}|(?<=\+)\d{1,3}+[ \-.]\d{6,14}+)(?!\w)"
)
# IPv4 addresses on their own (their few digits are too few for _NUM); the octets are checked by _IPV4
# in Python, on the few candidates: a pattern starting with a digit class lets the matcher skip ahead.
_IPV4_WORD = re.compile(r"\d(?<![\w+.\-/@:]\d)\d{0,2}(?:\.\d{1,3}){3}(?![\w\-]|\.\d)")

# What a number candidate (_NUM) may hold besides digits: deleted in C to get its digits.
_SEPARATORS = str.maketrans("", "", " -.()/+")
_DATE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}")
_SSN_SHAPE = re.compile(r"\d{3}([-. ])\d{2}\1\d{4}")
_SSN = re.compile(r"(?!000|666|9)\d{3}([-. ])(?!00)\d{2}\1(?!0000)\d{4}")
_SSN_PUBLISHED = frozenset({"078051120", "457555462", "219099999"})
_CARD_SEPARATORS = re.compile(r"\d+(?:([ .-])\d+)?(?:\1\d+)*")
_PHONE_WORDS = re.compile(r"(?i)\b(?:phone|tel|telephone|call|mobile|cell|fax|whatsapp|sms|text|ring|dial)\b")
_NOT_PHONE_WORDS = re.compile(
    r"(?i)(?:\b(?:order|invoice|ticket|ref|reference|room|id|account|acct|tracking|po|isbn|issn|zip|serial|lot|sku|part|model|box)\b|#|no\.)"
)
_VERSION_BEFORE = re.compile(r"(?i)(?:\bv|version\s*|release\s*)$")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_issuer(digits: str) -> str | None:
    """The card network a number belongs to by its prefix and length, or None."""
    n = len(digits)
    two, four = int(digits[:2]), int(digits[:4])
    if digits[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= two <= 55 or 2221 <= four <= 2720) and n == 16:
        return "mastercard"
    if two in (34, 37) and n == 15:
        return "amex"
    if (digits.startswith("6011") or two == 65 or 644 <= int(digits[:3]) <= 649) and 16 <= n <= 19:
        return "discover"
    if 3528 <= four <= 3589 and 16 <= n <= 19:
        return "jcb"
    if (300 <= int(digits[:3]) <= 305 or two in (36, 38, 39)) and 14 <= n <= 19:
        return "diners"
    if two == 62 and 16 <= n <= 19:
        return "unionpay"
    if (two == 50 or 56 <= two <= 58) and 12 <= n <= 19:
        return "maestro"
    return None


def is_card(candidate: str, digits: str) -> bool:
    if not 12 <= len(digits) <= 19 or not _CARD_SEPARATORS.fullmatch(candidate):
        return False
    return card_issuer(digits) is not None and luhn_valid(digits)


def is_ssn(candidate: str) -> bool:
    """Issued SSN rules (python-stdnum's, checked in one pattern): area not 000, 666 or 9xx, group not 00,
    serial not 0000, and not one of the numbers published in advertisements."""
    return (
        _SSN.fullmatch(candidate) is not None and candidate[:3] + candidate[4:6] + candidate[7:] not in _SSN_PUBLISHED
    )


def is_phone(candidate: str, digits: str, before: str) -> bool:
    """A phone number, validated with phonenumbers' patterns; national numbers need phone-like evidence
    (separators or a word like "call" before them) so that order numbers and ids stay out. The checks
    are ordered cheapest first: most digit runs are refused by their length or shape alone, before any
    regex reads the words around them."""
    n = len(digits)
    if not 7 <= n <= 15:
        return False
    international = candidate.startswith(("+", "00"))
    national = ""
    if international:
        if n < 8 or (candidate.startswith("00") and n < 10):
            return False  # the shortest plans have 7 digits after a 1-digit country code
    elif digits[0] == "0":
        if not 9 <= n <= 13:
            return False
    else:
        # North American numbers: NXX NXX XXXX, with an optional leading 1.
        national = digits[1:] if n == 11 and digits[0] == "1" else digits
        if len(national) != 10 or national[0] in "01" or national[3] in "01":
            return False
    if _DATE.match(candidate) or _NOT_PHONE_WORDS.search(before[-20:]):
        return False
    if international:
        text = "+" + candidate[2:] if candidate.startswith("00") else candidate
        return _valid_number(text, None)
    separated = n != len(candidate)
    if not separated and not _PHONE_WORDS.search(before[-30:]):
        return False
    if separated and "." in candidate and not _PHONE_WORDS.search(before[-30:]):
        # "10.0.12.34", "3.14159265": dotted numbers are phones only when introduced as such.
        groups = candidate.split(".")
        if len(groups) != 3 or [len(g) for g in groups] != [3, 3, 4]:
            return False
    if _SSN_SHAPE.fullmatch(candidate):
        return False  # 3-2-4 digits is how SSNs and serials are written, never phone numbers
    if national:
        return _nanp_valid(national)
    return _trunk_zero_valid(candidate)


@functools.cache
def _nanp_pattern() -> re.Pattern[str]:
    """phonenumbers' own number patterns of every region of country code 1, in one regex: a national
    number valid anywhere in the plan matches, as phonenumbers.is_valid_number says (the same verdicts on
    20,000 random numbers), in under a microsecond instead of tens."""
    patterns: list[str] = []
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1]:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if metadata is None:
            continue
        for desc in (
            metadata.fixed_line,
            metadata.mobile,
            metadata.toll_free,
            metadata.premium_rate,
            metadata.shared_cost,
            metadata.personal_number,
            metadata.voip,
            metadata.uan,
            metadata.voicemail,
            metadata.pager,
        ):
            if desc is not None and desc.national_number_pattern:
                patterns.append(desc.national_number_pattern)
    return re.compile("(?:" + "|".join(dict.fromkeys(patterns)) + ")")


def _nanp_valid(national: str) -> bool:
    return _nanp_pattern().fullmatch(national) is not None


class _NotFlat(Exception):
    """A part of a pattern that nanp_table cannot spell out as digit classes."""


def _digit_sequences(items: Any, width: int) -> set[tuple[int, ...]]:
    """The strings of `width` digits a parsed pattern (re._parser) matches, as tuples of per-position
    digit masks (bit d set: digit d allowed). Only literals, classes, bounded repeats, groups and
    alternation are spelled out; anything else raises _NotFlat."""
    from re import _constants as c  # type: ignore[attr-defined]

    sequences: set[tuple[int, ...]] = {()}
    for op, arg in items:
        if op is c.SUBPATTERN:
            options = _digit_sequences(arg[3], width)
        elif op is c.BRANCH:
            options = set().union(*(_digit_sequences(alt, width) for alt in arg[1]))
        elif op is c.MAX_REPEAT or op is c.MIN_REPEAT:
            low, high, sub = arg
            one = _digit_sequences(sub, width)
            options = set()
            current: set[tuple[int, ...]] = {()}
            for count in range(min(high, width) + 1):
                if count >= low:
                    options |= current
                current = {a + b for a in current for b in one if len(a) + len(b) <= width}
        else:
            options = {(_digit_mask(op, arg),)}
        sequences = {a + b for a in sequences for b in options if len(a) + len(b) <= width}
    return sequences


def _digit_mask(op: Any, arg: Any) -> int:
    from re import _constants as c  # type: ignore[attr-defined]

    if op is c.LITERAL:
        return 1 << (arg - 48) if 48 <= arg <= 57 else 0
    if op is c.IN:
        mask = 0
        for item_op, item in arg:
            if item_op is c.LITERAL:
                mask |= _digit_mask(item_op, item)
            elif item_op is c.RANGE:
                mask |= sum(1 << (d - 48) for d in range(max(item[0], 48), min(item[1], 57) + 1))
            elif item_op is c.CATEGORY and item is c.CATEGORY_DIGIT:
                mask |= 0x3FF
            else:
                raise _NotFlat(item_op)
        return mask
    raise _NotFlat(op)


@functools.cache
def nanp_table() -> bytes | None:
    """_nanp_pattern spelled out for the native scanner: for each area code (the first three digits),
    the rows of digit masks the other seven must fit, one row per alternative of the pattern. A national
    number is valid when it fits one of its area code's rows: the pattern's own verdict, checked in a
    few comparisons (tests/routing/test_native_scan.py compares the two). None when the pattern holds
    something this cannot spell out (phonenumbers' metadata changed shape): the scanner then asks
    _nanp_valid."""
    from re import _parser  # type: ignore[attr-defined]

    try:
        sequences = _digit_sequences(_parser.parse(_nanp_pattern().pattern), 10)
    except _NotFlat:
        return None
    by_area: dict[int, set[tuple[int, ...]]] = {}
    for seq in sequences:
        if len(seq) != 10 or not all(seq):
            continue
        for d0 in range(10):
            for d1 in range(10):
                for d2 in range(10):
                    if seq[0] >> d0 & 1 and seq[1] >> d1 & 1 and seq[2] >> d2 & 1:
                        by_area.setdefault(d0 * 100 + d1 * 10 + d2, set()).add(seq[3:])
    offsets = array.array("I", [0])
    rows = array.array("H")
    for area in range(1000):
        for row in sorted(by_area.get(area, ())):
            rows.extend(row)
        offsets.append(len(rows) // 7)
    return offsets.tobytes() + rows.tobytes()


def _trunk_zero_valid(candidate: str) -> bool:
    return any(_valid_number(candidate, region) for region in TRUNK_ZERO_REGIONS)


def _international_valid(text: str) -> bool:
    return _valid_number(text, None)


@functools.cache
def native_ready() -> bool:
    """Hands the native scanner the Python verdicts it asks for (once per process); False where the
    module is not built."""
    if native is None:
        return False
    native.configure(_iban_registered, _international_valid, _trunk_zero_valid, _nanp_valid, nanp_table())
    return True


@functools.lru_cache(maxsize=8192)
def _valid_number(text: str, region: str | None) -> bool:
    """phonenumbers' verdict, remembered: a prompt that repeats a number pays for it once."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number)


_IBAN_LETTERS = str.maketrans({chr(c): str(c - 55) for c in range(65, 91)} | {" ": None})


def is_iban(candidate: str) -> bool:
    """The ISO 7064 check (mod 97 of the number with its letters as 10..35, computed in C by int())
    first: look-alikes fail it, and only numbers that pass it meet python-stdnum's per-country formats."""
    compact = candidate.replace(" ", "")
    if int((compact[4:] + compact[:4]).translate(_IBAN_LETTERS)) % 97 != 1:
        return False
    return _iban_registered(compact)


@functools.lru_cache(maxsize=4096)
def _iban_registered(compact: str) -> bool:
    return stdnum_iban.is_valid(compact)


def is_ipv6(candidate: str) -> bool:
    if sum(c not in ":" for c in candidate) < 4:
        return False  # "::", "a::b": too little to be an address someone wrote down
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def entropy(value: str) -> float:
    counts: dict[str, int] = {}
    for ch in value:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def is_random_token(value: str) -> bool:
    """A value that looks generated (a key, a token), not a word or a path."""
    value = value.rstrip(".")
    if len(value) < 16:
        return False
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    if not (has_digit and has_alpha) and len(value) < 32:
        return False
    return entropy(value) >= 3.0


def resolve(hits: list[Finding]) -> list[Finding]:
    """Non-overlapping findings in text order; where two overlap, the one starting first (or the longer) wins."""
    if len(hits) < 2:
        return hits
    if native is not None:
        return native.resolve(hits)  # the same, without a Python key function per finding
    return resolve_py(hits)


def resolve_py(hits: list[Finding]) -> list[Finding]:
    """resolve in Python (and the reference the native one is tested against)."""
    if len(hits) < 2:
        return hits
    hits.sort(key=lambda h: (h[0], h[0] - h[1]))
    kept = [hits[0]]
    for hit in hits[1:]:
        if hit[0] >= kept[-1][1]:
            kept.append(hit)
    return kept


def lower(text: str) -> str:
    """The text lower-cased with its offsets kept (a few characters, like "İ", lower-case to two)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(low if len(low := c.lower()) == 1 else c for c in text)


def term_pattern(words: Iterable[str]) -> re.Pattern[str]:
    """Literal words or phrases (lower-cased: matched on the lower-cased text), any run of whitespace
    between words; whole words are checked by the caller."""
    alternatives = sorted({" ".join(w.lower().split()) for w in words if w.strip()}, key=len, reverse=True)
    escaped = [r"\s+".join(re.escape(part) for part in w.split(" ")) for w in alternatives]
    return re.compile("(?:" + "|".join(escaped) + r")(?!\w)")


def secret_hints(text: str, lowered: str) -> int:
    """Which of the secret patterns' substrings occur (H_* bits): what the native `hints` computes."""
    hints = 0
    if "-----BEGIN" in text:
        hints |= H_PKEY
    if "eyJ" in text:
        hints |= H_JWT
    if any(hint in text for hint in _PROVKEY_HINTS):
        hints |= H_PROVKEY
    if "earer" in lowered:
        hints |= H_BEARER
    for hint, bit in _KW_BITS:
        if hint in lowered:
            hints |= bit
    return hints


class Scanner:
    """The built-in detectors a policy enables, and its term list, compiled once per policy."""

    def __init__(self, detectors: Iterable[str], terms: Iterable[str] = ()) -> None:
        self.enabled = frozenset(detectors)
        self.numbers = bool(self.enabled & {"card", "us_ssn", "phone", "ip"})
        # What the native passes run (its flag bits), or -1 where the module is not built.
        self.native_flags = -1
        if native_ready():
            self.native_flags = sum(
                bit
                for name, bit in (
                    ("email", native.EMAIL),
                    ("iban", native.IBAN),
                    ("ip", native.IP),
                    ("us_ssn", native.SSN),
                    ("card", native.CARD),
                    ("phone", native.PHONE),
                )
                if name in self.enabled
            )
        # Loaded here, at config load in a worker thread, never on a request.
        self.ner = ner_engine() if NER_DETECTOR in self.enabled else None
        words = [w for w in terms if w.strip()]
        self.terms = term_pattern(words) if words else None
        # First words, lower-cased: a term list is searched only when one of them occurs.
        self.term_hints = tuple({w.lower().split()[0] for w in words})

    def scan(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        enabled = self.enabled
        lowered: str | None = None
        # None where the native module is not built or hands the text back: the Python passes read it.
        hints = native.hints(text) if self.native_flags >= 0 else None
        if "secret" in enabled:
            lowered = lower(text)
            if hints is None:
                self._secrets(text, lowered, found, secret_hints(text, lowered), native_read=False)
            else:
                self._secrets(text, lowered, found, hints, native_read=True)
        if hints is not None:
            native.scan(text, self.native_flags, found)
        else:
            self._dense(text, found)
        if "ip" in enabled and (_V6_HINT.search(text) if hints is None else hints & H_V6):
            found.extend((m.start(), m.end(), "ip") for m in _IPV6.finditer(text) if is_ipv6(m.group()))
        if self.ner is not None:
            for result in self.ner.analyze(text=text, entities=["PERSON"], language="en"):
                if result.score >= NER_MIN_SCORE:
                    found.append((result.start, result.end, NER_DETECTOR))
        if self.terms is not None:
            if lowered is None:
                lowered = lower(text)
            if any(hint in lowered for hint in self.term_hints):
                for m in self.terms.finditer(lowered):
                    start = m.start()
                    if start == 0 or not (text[start - 1].isalnum() or text[start - 1] == "_"):
                        found.append((start, m.end(), "terms"))
        return resolve(found)

    def _dense(self, text: str, found: list[Finding]) -> None:
        """E-mail addresses, IBANs, IPv4 addresses and numbers in Python (what native.scan does)."""
        enabled = self.enabled
        if "email" in enabled and "@" in text:
            self._emails(text, found)
        if "iban" in enabled:
            found.extend((m.start(), m.end(), "iban") for m in _IBAN.finditer(text) if is_iban(m.group()))
        if "ip" in enabled and "." in text:
            self._ipv4(text, found)
        if self.numbers:
            self._numbers(text, found)

    def _secrets(self, text: str, lowered: str, found: list[Finding], hints: int, native_read: bool) -> None:
        if hints & H_PKEY:
            found.extend((m.start(), m.end(), "secret") for m in _PKEY.finditer(text))
        if hints & H_JWT:
            found.extend((m.start(), m.end(), "secret") for m in _JWT.finditer(text))
        if hints & H_PROVKEY:
            if not native_read:
                found.extend((m.start(), m.end(), "secret") for m in _PROVKEY.finditer(text))
            else:
                # only where a hint is (native.provkey_starts): the alternation is slow to try everywhere
                for start in native.provkey_starts(text):
                    if (m := _PROVKEY.match(text, start)) is not None:
                        found.append((m.start(), m.end(), "secret"))
        if hints & H_BEARER:
            for m in _BEARER.finditer(text):
                if is_random_token(m.group(1)) or len(m.group(1)) >= 24:
                    found.append((m.start(1), m.end(1), "secret"))
        for hint, bit in _KW_BITS:
            if not hints & bit:
                continue
            pos = lowered.find(hint)
            while pos >= 0:
                tail = _KW_TAIL.match(lowered, pos + len(hint))
                if tail is not None:
                    value = text[tail.start(1) : tail.end(1)].rstrip(".")
                    if is_random_token(value):
                        found.append((tail.start(1), tail.start(1) + len(value), "secret"))
                pos = lowered.find(hint, pos + 1)

    def _emails(self, text: str, found: list[Finding]) -> None:
        for m in _EMAIL.finditer(text):
            start = m.start()
            if not text[start].isalnum():
                # "...jane@x.com": the leading dots are punctuation
                at = text.index("@", start)
                while start < at and not text[start].isalnum():
                    start += 1
                if start == at:
                    continue
            found.append((start, m.end(), "email"))

    def _ipv4(self, text: str, found: list[Finding]) -> None:
        for m in _IPV4_WORD.finditer(text):
            start = m.start()
            if _IPV4.fullmatch(m.group()) and not _VERSION_BEFORE.search(text, max(start - 10, 0), start):
                found.append((start, m.end(), "ip"))  # an address, not "version 10.0.0.1"

    def _numbers(self, text: str, found: list[Finding]) -> None:
        # search, not finditer: after a value found at the head of a candidate ("4111 1111 1111 1111
        # 4012 ..."), the search goes on right after it, so the next value is read whole. Digit runs
        # inside a value already found (an IBAN's, an address's) are skipped whole.
        covered = sorted(found) if found else []
        ci, nc = 0, len(covered)
        pos = 0
        search = _NUM.search
        while (m := search(text, pos)) is not None:
            start = m.start()
            while ci < nc and covered[ci][1] <= start:
                ci += 1
            if ci < nc and covered[ci][0] <= start:
                pos = covered[ci][1]
                continue
            end = self._number(text, m.group(), start, found)
            pos = m.end() if end is None or end <= start else end

    def _number(self, text: str, candidate: str, start: int, found: list[Finding]) -> int | None:
        """Classify a digit run (_NUM): append what it holds to `found` and return where that ends,
        or None when it holds nothing."""
        if candidate[0] == "(" and candidate.count("(") > candidate.count(")"):
            candidate, start = candidate[1:], start + 1  # "(4111 1111 1111 1111)": the value inside
        if " " in candidate:
            chunks = candidate.split(" ")
            if max(map(len, chunks)) >= 9 and not (chunks[0].startswith("+") and len(chunks[0]) <= 4):
                # A long group joined to others by spaces ("415-555-2671 2 times", "1234567 1234567"):
                # no value is written with a space after 9 characters of digits, so the first group is
                # one value or none; the search goes on after it.
                head = chunks[0]
                if len(head) < 9:
                    return start + len(head)
                hit = self._classify(text, head, start)
                if hit is not None:
                    found.append((start, start + len(head), hit))
                return start + len(head)
        hit = self._classify(text, candidate, start)
        if hit is not None:
            found.append((start, start + len(candidate), hit))
            return start + len(candidate)
        if " " not in candidate:
            return None
        # "10.0.0.1 2024", "4111 1111 1111 1111 4012 8888 8888 1881": the groups before a space.
        head = candidate.rpartition(" ")[0]
        while head:
            head = head.rstrip(" ")
            hit = self._classify(text, head, start) if len(head) >= 9 else None
            if hit is not None:
                found.append((start, start + len(head), hit))
                return start + len(head)
            head = head.rpartition(" ")[0]
        return None

    def _classify(self, text: str, candidate: str, start: int) -> str | None:
        enabled = self.enabled
        if candidate.endswith(")") or candidate.count("(") != candidate.count(")"):
            return None
        if "." in candidate and _IPV4.fullmatch(candidate):
            return None  # an address (the IPv4 pass finds it), not a phone or a card
        digits = candidate.translate(_SEPARATORS)
        if "us_ssn" in enabled and len(digits) == 9 and is_ssn(candidate):
            return "us_ssn"
        if "card" in enabled and is_card(candidate, digits):
            return "card"
        if "phone" in enabled and is_phone(candidate, digits, text[max(start - 30, 0) : start]):
            return "phone"
        return None
