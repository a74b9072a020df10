# The native scanner's interface (routing/policies/_scan.c); detectors.py is its only user.
from collections.abc import Callable

EMAIL: int
IBAN: int
IP: int
SSN: int
CARD: int
PHONE: int
H_PKEY: int
H_JWT: int
H_PROVKEY: int
H_BEARER: int
H_KEY: int
H_SECRET: int
H_TOKEN: int
H_PASSW: int
H_PWD: int
H_V6: int
H_AT: int
H_DOT: int

def hints(text: str, /) -> int | None: ...
def scan(text: str, flags: int, found: list[tuple[int, int, str]], /) -> bool: ...
def provkey_starts(text: str, /) -> list[int]: ...
def resolve(hits: list[tuple[int, int, str]], /) -> list[tuple[int, int, str]]: ...
def configure(
    iban_registered: Callable[[str], bool],
    valid_number: Callable[[str], bool],
    trunk_valid: Callable[[str], bool],
    nanp_valid: Callable[[str], bool],
    nanp_table: bytes | None,
    /,
) -> None: ...
