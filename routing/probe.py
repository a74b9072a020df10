"""The "test connection" button for a provider credential: one cheap authenticated call, with a verdict.

OpenAI and OpenAI-compatible servers answer GET {base_url}/models with the models the key can use,
which proves the URL and the key without spending tokens. The call goes through the same SSRF guard
as the proxy (routing.netguard, and routing.netguard.GuardedResolver at connect time).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from asgiref.sync import async_to_sync

from gateway_project import crypto
from routing.models import DEFAULT_BASE_URLS, ProviderCredential, ProviderKind
from routing.netguard import GuardedResolver, UnsafeUpstreamError, validate_base_url
from routing.redact import redact

TIMEOUT_SECONDS = 10.0


@dataclass
class ProbeResult:
    ok: bool
    message: str
    models: list[str] = field(default_factory=list)


def provider_test_connection(provider: ProviderCredential) -> ProbeResult:
    if provider.kind == ProviderKind.MOCK:
        return ProbeResult(True, "The built-in mock provider is always available.", ["mock-chat", "mock-embed"])
    base_url = (provider.base_url or DEFAULT_BASE_URLS.get(provider.kind, "")).rstrip("/")
    try:
        validate_base_url(base_url)
        api_key = crypto.decrypt(provider.api_key_encrypted)
    except UnsafeUpstreamError as exc:
        return ProbeResult(False, str(exc))
    except crypto.DecryptionError as exc:
        return ProbeResult(False, f"The stored API key cannot be read: {exc}. Enter it again.")
    return async_to_sync(_list_models)(f"{base_url}/models", api_key)


async def _list_models(url: str, api_key: str) -> ProbeResult:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    connector = aiohttp.TCPConnector(resolver=GuardedResolver())
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.get(url, headers=headers, allow_redirects=False) as response,
        ):
            status = response.status
            try:
                data = await response.json(content_type=None)
            except ValueError:
                data = None
    except TimeoutError:
        return ProbeResult(False, f"No answer from {url} within {TIMEOUT_SECONDS:.0f} seconds.")
    except (aiohttp.ClientError, OSError) as exc:
        return ProbeResult(False, f"Could not connect to {url}: {exc}")
    if status in (401, 403):
        return ProbeResult(False, f"The provider refused the API key (HTTP {status}). Check the key.")
    if status != 200:
        detail = ""
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            # Providers quote the rejected key in their errors: never show it back, even to an admin.
            detail = ": " + redact(str(data["error"].get("message") or ""), [api_key] if len(api_key) >= 8 else [])
        return ProbeResult(False, f"The provider answered HTTP {status}{detail}")
    # A 200 is not proof: a web page, a login portal or a catch-all server answer 200 too.
    if data is None:
        return ProbeResult(False, f"{url} answered 200 but not JSON: is the base URL right?")
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        return ProbeResult(False, f"{url} answered 200 but not with a list of models: is the base URL right?")
    models = sorted(str(m.get("id")) for m in data["data"] if isinstance(m, dict) and m.get("id"))
    return ProbeResult(True, f"Connected. The key can use {len(models)} models.", models)
