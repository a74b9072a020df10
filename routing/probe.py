"""The "test connection" button for a provider credential: one cheap authenticated call, with a verdict.

Each kind has a listing call that proves the URL and the credentials without spending tokens:
- openai, openai-compatible: GET {base_url}/models (Bearer key) -> data[].id
- anthropic: GET {base}/v1/models (x-api-key, anthropic-version) -> data[].id
- azure: GET {base}/openai/models?api-version=... (api-key), Azure's "Models - List" -> data[].id
- gemini: GET {base}/v1beta/models (x-goog-api-key) -> models[].name
- bedrock: the Runtime host has no listing call, so the control plane's ListFoundationModels,
  GET https://bedrock.{region}.amazonaws.com/foundation-models, SigV4-signed (service "bedrock")
  -> modelSummaries[].modelId. A custom base_url on a bedrock-runtime host is mapped to the matching
  bedrock host; any other base_url (a proxy, the test fake) gets {base_url}/foundation-models.
The operator's extra headers are sent too, as the proxy sends them, so a provider behind an
authenticating proxy tests the way it is called.

The call goes through the same SSRF guard as the proxy (gateway_project.common.netguard, and
gateway_project.common.netguard.GuardedResolver at connect time). What the provider says back is shown only after
gateway_project.common.redact has removed every secret of the credential: providers quote rejected keys.
The request shapes mirror proxy/providers/*, which this module must not import (domain apps never
import proxy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
from asgiref.sync import async_to_sync
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from yarl import URL

from gateway_project.common import crypto
from gateway_project.common.netguard import GuardedResolver, UnsafeUpstreamError, validate_base_url
from gateway_project.common.redact import redact, secrets_of
from routing.models import DEFAULT_BASE_URLS, ProviderCredential, ProviderKind

TIMEOUT_SECONDS = 10.0
ANTHROPIC_VERSION = "2023-06-01"
AZURE_API_VERSION = "2024-10-21"  # the GA version that has "Models - List"; the proxy's default too
LIST_LIMIT = 1000  # Anthropic's and Gemini's largest page, so the count is complete for any real account


@dataclass
class ProbeResult:
    ok: bool
    message: str
    models: list[str] = field(default_factory=list)


class _CannotProbe(Exception):
    """The credential lacks what the call needs (a base URL, a region, AWS keys); the text says what."""


@dataclass
class _Call:
    url: str
    headers: dict[str, str]
    secrets: list[str]  # every secret of the credential, for redacting what the provider says
    # Model ids from a 200 JSON body (and whether more pages exist), or None when it is no model list.
    parse: Callable[[Any], tuple[list[str], bool] | None]
    refused: str = "The provider refused the API key"
    fix: str = "Check the key."


@dataclass
class _Answer:
    status: int
    data: Any  # the JSON body, None when it was not JSON
    error_type: str = ""  # AWS's x-amzn-ErrorType, without its namespace


def provider_test_connection(provider: ProviderCredential) -> ProbeResult:
    if provider.kind == ProviderKind.MOCK:
        return ProbeResult(True, "The built-in mock provider is always available.", ["mock-chat", "mock-embed"])
    try:
        api_key = crypto.decrypt(provider.api_key_encrypted)
        extra = provider.secrets()
    except crypto.DecryptionError as exc:
        return ProbeResult(False, f"The stored credentials cannot be read: {exc}. Enter them again.")
    build = _BUILDERS.get(provider.kind)
    if build is None:
        return ProbeResult(False, f"Testing a {provider.kind} provider is not supported.")
    try:
        call = build(provider, api_key, extra)
        validate_base_url(call.url)
    except (UnsafeUpstreamError, _CannotProbe) as exc:
        return ProbeResult(False, str(exc))
    answer = async_to_sync(_fetch)(call.url, call.headers)
    if isinstance(answer, ProbeResult):
        return answer
    return _verdict(provider.kind, call, answer)


# --- one request per kind -------------------------------------------------------------------------------


def _secrets(api_key: str, extra: dict) -> list[str]:
    return secrets_of(
        SimpleNamespace(
            api_key=api_key,
            aws_access_key_id=extra.get("aws_access_key_id", ""),
            aws_secret_access_key=extra.get("aws_secret_access_key", ""),
            aws_session_token=extra.get("aws_session_token", ""),
            extra_headers=dict(extra.get("headers") or {}),
        )
    )


def _base(provider: ProviderCredential) -> str:
    base = (provider.endpoint_url or DEFAULT_BASE_URLS.get(provider.kind, "")).rstrip("/")
    if not base:
        raise _CannotProbe(f"A {provider.get_kind_display()} provider needs a base_url to be tested.")
    return base


def _headers(own: dict[str, str], extra: dict) -> dict[str, str]:
    # The operator's headers go last, as in the proxy's adapters.
    return {**own, **dict(extra.get("headers") or {})}


def _ids(items: Any, key: str, prefix: str = "") -> list[str] | None:
    if not isinstance(items, list):
        return None
    return sorted(str(m[key]).removeprefix(prefix) for m in items if isinstance(m, dict) and m.get(key))


def _openai(provider: ProviderCredential, api_key: str, extra: dict) -> _Call:
    own = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def parse(data: Any) -> tuple[list[str], bool] | None:
        ids = _ids(data.get("data"), "id") if isinstance(data, dict) else None
        return None if ids is None else (ids, False)

    return _Call(f"{_base(provider)}/models", _headers(own, extra), _secrets(api_key, extra), parse)


def _anthropic(provider: ProviderCredential, api_key: str, extra: dict) -> _Call:
    base = _base(provider).removesuffix("/v1")
    own = {"anthropic-version": ANTHROPIC_VERSION, **({"x-api-key": api_key} if api_key else {})}

    def parse(data: Any) -> tuple[list[str], bool] | None:
        ids = _ids(data.get("data"), "id") if isinstance(data, dict) else None
        return None if ids is None else (ids, bool(data.get("has_more")))

    url = f"{base}/v1/models?limit={LIST_LIMIT}"
    return _Call(url, _headers(own, extra), _secrets(api_key, extra), parse)


def _azure(provider: ProviderCredential, api_key: str, extra: dict) -> _Call:
    version = quote(provider.api_version or AZURE_API_VERSION, safe="")
    own = {"api-key": api_key} if api_key else {}

    def parse(data: Any) -> tuple[list[str], bool] | None:
        ids = _ids(data.get("data"), "id") if isinstance(data, dict) else None
        return None if ids is None else (ids, False)

    url = f"{_base(provider)}/openai/models?api-version={version}"
    return _Call(url, _headers(own, extra), _secrets(api_key, extra), parse)


def _gemini(provider: ProviderCredential, api_key: str, extra: dict) -> _Call:
    base = _base(provider)
    if not base.endswith(("/v1beta", "/v1")):
        base += "/v1beta"
    own = {"x-goog-api-key": api_key} if api_key else {}

    def parse(data: Any) -> tuple[list[str], bool] | None:
        if isinstance(data, dict) and not data:
            return [], False  # Google omits "models" when the list is empty
        ids = _ids(data.get("models"), "name", "models/") if isinstance(data, dict) else None
        return None if ids is None else (ids, bool(data.get("nextPageToken")))

    url = f"{base}/models?pageSize={LIST_LIMIT}"
    return _Call(url, _headers(own, extra), _secrets(api_key, extra), parse)


def _bedrock_control_url(provider: ProviderCredential) -> str:
    if not provider.base_url:
        return f"https://bedrock.{provider.region}.amazonaws.com/foundation-models"
    parts = urlsplit(provider.base_url.rstrip("/"))
    host = parts.hostname or ""
    labels = host.split(".")
    # bedrock-runtime[-fips].{region}.amazonaws.com: the control plane is bedrock[-fips] on the same domain.
    if labels and labels[0].startswith("bedrock-runtime") and host.endswith((".amazonaws.com", ".amazonaws.com.cn")):
        netloc = parts.netloc.replace(labels[0], labels[0].replace("bedrock-runtime", "bedrock", 1), 1)
        return urlunsplit((parts.scheme, netloc, "/foundation-models", "", ""))
    return f"{provider.base_url.rstrip('/')}/foundation-models"


def _bedrock(provider: ProviderCredential, api_key: str, extra: dict) -> _Call:
    if not provider.region:
        raise _CannotProbe("A Bedrock provider needs a region to be tested.")
    key_id, secret = extra.get("aws_access_key_id", ""), extra.get("aws_secret_access_key", "")
    if not key_id or not secret:
        raise _CannotProbe("A Bedrock provider needs aws_access_key_id and aws_secret_access_key to be tested.")
    # Normalised the way the transport (yarl) sends it: the signature covers the path as sent.
    url = str(URL(_bedrock_control_url(provider)))
    request = AWSRequest(method="GET", url=url, data=b"", headers=_headers({"accept": "application/json"}, extra))
    credentials = Credentials(key_id, secret, extra.get("aws_session_token") or None)
    SigV4Auth(credentials, "bedrock", provider.region).add_auth(request)

    def parse(data: Any) -> tuple[list[str], bool] | None:
        ids = _ids(data.get("modelSummaries"), "modelId") if isinstance(data, dict) else None
        return None if ids is None else (ids, False)

    return _Call(
        url,
        dict(request.headers.items()),
        _secrets(api_key, extra),
        parse,
        refused="The provider refused the credentials",
        fix="Check the access key id, the secret, the session token and the region.",
    )


_BUILDERS: dict[str, Callable[[ProviderCredential, str, dict], _Call]] = {
    ProviderKind.OPENAI: _openai,
    ProviderKind.OPENAI_COMPATIBLE: _openai,
    ProviderKind.ANTHROPIC: _anthropic,
    ProviderKind.AZURE: _azure,
    ProviderKind.GEMINI: _gemini,
    ProviderKind.BEDROCK: _bedrock,
}


# --- the call and the verdict ---------------------------------------------------------------------------


async def _fetch(url: str, headers: dict[str, str]) -> _Answer | ProbeResult:
    connector = aiohttp.TCPConnector(resolver=GuardedResolver())
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.get(url, headers=headers, allow_redirects=False) as response,
        ):
            error_type = response.headers.get("x-amzn-errortype", "").split(":", 1)[0]
            try:
                data = await response.json(content_type=None)
            except ValueError:
                data = None
            return _Answer(response.status, data, error_type)
    except TimeoutError:
        return ProbeResult(False, f"No answer from {url} within {TIMEOUT_SECONDS:.0f} seconds.")
    except (aiohttp.ClientError, OSError) as exc:
        return ProbeResult(False, f"Could not connect to {url}: {exc}")


def _error_message(data: Any) -> str:
    """What the provider said went wrong, in any of the dialects ({"error": {"message"}}, AWS's {"message"})."""
    if not isinstance(data, dict):
        return ""
    error = data.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or "")
    if isinstance(error, str):
        return error
    return str(data.get("message") or data.get("Message") or "")


def _key_invalid(data: Any) -> bool:
    # Google answers a wrong key with 400 INVALID_ARGUMENT, reason API_KEY_INVALID, not with a 401.
    error = data.get("error") if isinstance(data, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return isinstance(details, list) and any(
        isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID" for d in details
    )


def _verdict(kind: str, call: _Call, answer: _Answer) -> ProbeResult:
    status, data = answer.status, answer.data
    said = redact(_error_message(data), call.secrets).strip().rstrip(".")
    detail = f": {said}" if said else ""
    if kind == ProviderKind.BEDROCK and status == 403 and answer.error_type == "AccessDeniedException":
        # The signature was good, so the keys are real; the identity may just not hold this permission.
        return ProbeResult(
            False,
            f"AWS accepted the credentials but denied bedrock:ListFoundationModels (HTTP 403){detail}. "
            "Calls to models work only if the identity may also invoke them: grant it that permission to test.",
        )
    if status in (401, 403) or (kind == ProviderKind.GEMINI and status == 400 and _key_invalid(data)):
        return ProbeResult(False, f"{call.refused} (HTTP {status}){detail}. {call.fix}")
    if status != 200:
        return ProbeResult(False, f"The provider answered HTTP {status}{detail}")
    # A 200 is not proof: a web page, a login portal or a catch-all server answer 200 too.
    if data is None:
        return ProbeResult(False, f"{call.url} answered 200 but not JSON: is the base URL right?")
    parsed = call.parse(data)
    if parsed is None:
        return ProbeResult(False, f"{call.url} answered 200 but not with a list of models: is the base URL right?")
    models, more = parsed
    # The page puts "Connection works." in front of the message: it does not say it again.
    count = f"at least {len(models)} models" if more else f"{len(models)} model{'' if len(models) == 1 else 's'}"
    return ProbeResult(True, f"The credentials can use {count}.", models)
