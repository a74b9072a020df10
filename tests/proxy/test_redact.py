"""The deployment's own secrets, in full or in the partial forms providers print, never leave the gateway."""

from __future__ import annotations

import pytest

from gateway_project.common.redact import redact, secrets_of
from proxy.snapshot import Deployment

KEY = "sk-proj-Abc123Def456Ghi789Jkl0"


def deployment(**extra) -> Deployment:
    dep = Deployment(1, "gpt-4o-mini", "main", "openai", "", KEY, "gpt-4o-mini")
    dep.headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}", **extra}
    return dep


@pytest.mark.parametrize(
    "text",
    [
        f"Incorrect API key provided: Bearer {KEY}.",
        f"Incorrect API key provided: {KEY[:6]}***{KEY[-4:]}.",  # OpenAI's masked form
        f"key {KEY[:14]}... was revoked",  # a long prefix
        f"the key ending {KEY[-12:]} is invalid",  # a long suffix
        "x-api-secret hunter2-very-secret was refused",  # a header value the gateway added
    ],
)
def test_secrets_and_their_partial_forms_are_redacted(text):
    secrets = secrets_of(deployment(**{"x-api-secret": "hunter2-very-secret"}))
    cleaned = redact(text, secrets)
    assert "[redacted]" in cleaned
    for piece in (KEY, KEY[:14], KEY[-12:], KEY[-4:], "hunter2"):
        assert piece not in cleaned


def test_ordinary_error_messages_are_left_alone():
    secrets = secrets_of(deployment())
    for text in (
        "Rate limit reached for requests",
        "The model `gpt-4o-mini` does not exist. See https://platform.openai.com/docs/models.",
        "Invalid value for 'temperature': expected a number <= 2.",
    ):
        assert redact(text, secrets) == text
    assert "application/json" not in secrets  # plain headers are not secrets
