"""'Test connection' makes each kind's cheap listing call and only says Connected on a real model list."""

from __future__ import annotations

import json

import pytest

from gateway_project.common import crypto
from routing.models import ProviderCredential
from routing.probe import _bedrock_control_url, provider_test_connection
from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic_upstream import LISTING as ANTHROPIC_LISTING
from tests.fakes.anthropic_upstream import MODELS as ANTHROPIC_MODELS
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.azure_upstream import API_KEY as AZURE_KEY
from tests.fakes.azure_upstream import LISTING as AZURE_LISTING
from tests.fakes.azure_upstream import MODELS as AZURE_MODELS
from tests.fakes.azure_upstream import FakeAzure
from tests.fakes.bedrock_upstream import CREDENTIALS as BEDROCK_CREDENTIALS
from tests.fakes.bedrock_upstream import MODELS as BEDROCK_MODELS
from tests.fakes.bedrock_upstream import REGION as BEDROCK_REGION
from tests.fakes.bedrock_upstream import FakeBedrock
from tests.fakes.gemini_upstream import API_KEY as GEMINI_KEY
from tests.fakes.gemini_upstream import LISTING as GEMINI_LISTING
from tests.fakes.gemini_upstream import MODELS as GEMINI_MODELS
from tests.fakes.gemini_upstream import FakeGemini
from tests.helpers import UPSTREAM_KEY

pytestmark = pytest.mark.django_db


@pytest.fixture
def provider_at(acme, upstream):
    def make(prefix: str) -> ProviderCredential:
        return ProviderCredential.objects.create(
            tenant=acme,
            name=f"probe{prefix.replace('/', '-')}",
            kind="openai-compatible",
            base_url=f"http://{upstream.host}:{upstream.port}{prefix}/v1",
            api_key_encrypted=crypto.encrypt(UPSTREAM_KEY),
        )

    return make


def test_a_models_list_is_connected(provider_at):
    result = provider_test_connection(provider_at(""))
    assert result.ok and result.models == ["gpt-4o", "gpt-4o-mini"]


def test_a_200_web_page_is_not_connected(provider_at):
    result = provider_test_connection(provider_at("/html"))
    assert not result.ok
    assert "answered 200 but not JSON: is the base URL right?" in result.message


def test_200_json_that_is_not_a_model_list_is_not_connected(provider_at):
    result = provider_test_connection(provider_at("/odd"))
    assert not result.ok and "not with a list of models" in result.message


def test_a_provider_quoting_the_key_in_its_error_does_not_show_it(provider_at):
    result = provider_test_connection(provider_at("/quote"))
    assert not result.ok
    assert "HTTP 400: Incorrect API key provided: [redacted]" in result.message
    assert UPSTREAM_KEY not in result.message


# --- each provider kind, against its loopback fake ---------------------------------------------------

WRONG_KEY = "sk-wrong-key-alice-0000000000"
BEDROCK_ALICE, BEDROCK_BOB = "AKIDALICEEXAMPLE01", "ASIABOBTEMPEXAMPLE"


@pytest.fixture(scope="module")
def fakes():
    servers = {
        "anthropic": FakeAnthropic().start(),
        "azure": FakeAzure().start(),
        "gemini": FakeGemini().start(),
        "bedrock": FakeBedrock().start(),
    }
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def fake(fakes):
    for server in fakes.values():
        server.reset()
    return fakes


def alices_provider(acme, kind: str, base_url: str, api_key: str = "", **fields) -> ProviderCredential:
    secrets = fields.pop("secrets", None)
    return ProviderCredential.objects.create(
        tenant=acme,
        name=f"alice-{kind}",
        kind=kind,
        base_url=base_url,
        api_key_encrypted=crypto.encrypt(api_key),
        secrets_encrypted=crypto.encrypt(json.dumps(secrets)) if secrets else "",
        **fields,
    )


def test_anthropic_lists_models_with_its_key_and_version_headers(acme, fake):
    server = fake["anthropic"]
    result = provider_test_connection(alices_provider(acme, "anthropic", server.base_url, ANTHROPIC_KEY))
    assert result.ok and result.models == sorted(ANTHROPIC_MODELS)
    sent = server.requests[-1]
    assert sent.path == "/v1/models"
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY and sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers


def test_anthropic_base_url_ending_in_v1_is_not_doubled(acme, fake):
    server = fake["anthropic"]
    result = provider_test_connection(alices_provider(acme, "anthropic", f"{server.base_url}/v1", ANTHROPIC_KEY))
    assert result.ok and server.requests[-1].path == "/v1/models"


def test_anthropic_refusing_the_key_is_a_clear_verdict(acme, fake):
    result = provider_test_connection(alices_provider(acme, "anthropic", fake["anthropic"].base_url, WRONG_KEY))
    assert not result.ok
    assert "refused the API key (HTTP 401): invalid x-api-key" in result.message


def test_anthropic_quoting_the_key_does_not_show_it(acme, fake):
    fake["anthropic"].script(ANTHROPIC_LISTING, {"status": 401, "message": f"invalid x-api-key {WRONG_KEY}"})
    result = provider_test_connection(alices_provider(acme, "anthropic", fake["anthropic"].base_url, WRONG_KEY))
    assert not result.ok and "refused the API key" in result.message
    assert WRONG_KEY not in result.message and "[redacted]" in result.message


def test_azure_lists_the_resource_models_with_api_key_and_api_version(acme, fake):
    server = fake["azure"]
    provider = alices_provider(acme, "azure", server.base_url, AZURE_KEY, api_version="2024-06-01")
    result = provider_test_connection(provider)
    assert result.ok and result.models == sorted(AZURE_MODELS)
    sent = server.requests[-1]
    assert sent.path == "/openai/models" and sent.query == {"api-version": "2024-06-01"}
    assert sent.headers["api-key"] == AZURE_KEY


def test_azure_without_api_version_uses_the_ga_default(acme, fake):
    result = provider_test_connection(alices_provider(acme, "azure", fake["azure"].base_url, AZURE_KEY))
    assert result.ok and fake["azure"].requests[-1].query == {"api-version": "2024-10-21"}


def test_azure_refusing_the_key_is_a_clear_verdict(acme, fake):
    result = provider_test_connection(alices_provider(acme, "azure", fake["azure"].base_url, WRONG_KEY))
    assert not result.ok and "refused the API key (HTTP 401): Access denied" in result.message


def test_azure_quoting_the_key_does_not_show_it(acme, fake):
    fake["azure"].script(AZURE_LISTING, {"status": 401, "message": f"Key {WRONG_KEY[:6]}***{WRONG_KEY[-4:]} is wrong"})
    result = provider_test_connection(alices_provider(acme, "azure", fake["azure"].base_url, WRONG_KEY))
    assert not result.ok and "[redacted]" in result.message and WRONG_KEY[-4:] not in result.message


def test_azure_without_a_base_url_says_it_needs_one(acme, fake):
    result = provider_test_connection(alices_provider(acme, "azure", "", AZURE_KEY))
    assert not result.ok and "needs a base_url" in result.message


def test_gemini_lists_models_without_their_prefix(acme, fake):
    server = fake["gemini"]
    result = provider_test_connection(alices_provider(acme, "gemini", server.base_url, GEMINI_KEY))
    assert result.ok and result.models == sorted(GEMINI_MODELS)
    sent = server.requests[-1]
    assert sent.path == "/v1beta/models" and sent.headers["x-goog-api-key"] == GEMINI_KEY
    assert "key" not in sent.query  # never in the URL, where proxies and logs would keep it


def test_gemini_answering_a_wrong_key_with_400_is_still_a_refusal(acme, fake):
    result = provider_test_connection(alices_provider(acme, "gemini", fake["gemini"].base_url, WRONG_KEY))
    assert not result.ok
    assert "refused the API key (HTTP 400): API key not valid" in result.message


def test_gemini_quoting_the_key_does_not_show_it(acme, fake):
    fake["gemini"].script(GEMINI_LISTING, {"status": 403, "message": f"Key {WRONG_KEY} is suspended."})
    result = provider_test_connection(alices_provider(acme, "gemini", fake["gemini"].base_url, WRONG_KEY))
    assert not result.ok and "refused the API key (HTTP 403)" in result.message
    assert WRONG_KEY not in result.message


def bedrock_secrets(key_id: str = BEDROCK_ALICE, **overrides) -> dict:
    secret, token = BEDROCK_CREDENTIALS[key_id]
    return {"aws_access_key_id": key_id, "aws_secret_access_key": secret, "aws_session_token": token or "", **overrides}


def test_bedrock_lists_foundation_models_with_a_sigv4_signed_call(acme, fake):
    server = fake["bedrock"]
    provider = alices_provider(acme, "bedrock", server.base_url, region=BEDROCK_REGION, secrets=bedrock_secrets())
    result = provider_test_connection(provider)
    assert result.ok, result.message
    assert result.models == sorted(BEDROCK_MODELS)
    sent = server.requests[-1]
    assert sent.path == "/foundation-models"
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={BEDROCK_ALICE}/")


def test_bedrock_temporary_credentials_sign_with_their_session_token(acme, fake):
    secrets = bedrock_secrets(BEDROCK_BOB)
    provider = alices_provider(acme, "bedrock", fake["bedrock"].base_url, region=BEDROCK_REGION, secrets=secrets)
    result = provider_test_connection(provider)
    assert result.ok, result.message
    assert fake["bedrock"].requests[-1].headers["x-amz-security-token"] == secrets["aws_session_token"]


def test_bedrock_wrong_secret_is_refused_and_not_shown(acme, fake):
    wrong = "not-alices-secret-key-0000000000000000"
    secrets = bedrock_secrets(aws_secret_access_key=wrong)
    provider = alices_provider(acme, "bedrock", fake["bedrock"].base_url, region=BEDROCK_REGION, secrets=secrets)
    result = provider_test_connection(provider)
    assert not result.ok
    assert result.message.startswith("The provider refused the credentials (HTTP 403): The request signature")
    assert wrong not in result.message


def test_bedrock_signing_for_another_region_is_refused(acme, fake):
    provider = alices_provider(acme, "bedrock", fake["bedrock"].base_url, region="eu-west-3", secrets=bedrock_secrets())
    result = provider_test_connection(provider)
    assert not result.ok and "refused the credentials (HTTP 403)" in result.message


def test_bedrock_without_aws_keys_says_what_is_missing(acme, fake):
    provider = alices_provider(acme, "bedrock", fake["bedrock"].base_url, region=BEDROCK_REGION)
    result = provider_test_connection(provider)
    assert not result.ok and "needs aws_access_key_id and aws_secret_access_key" in result.message
    assert fake["bedrock"].requests == []


@pytest.mark.parametrize(
    ("base_url", "region", "expected"),
    [
        ("", "eu-central-1", "https://bedrock.eu-central-1.amazonaws.com/foundation-models"),
        (
            "https://bedrock-runtime.us-west-2.amazonaws.com",
            "us-west-2",
            "https://bedrock.us-west-2.amazonaws.com/foundation-models",
        ),
        (
            "https://bedrock-runtime-fips.us-east-1.amazonaws.com/",
            "us-east-1",
            "https://bedrock-fips.us-east-1.amazonaws.com/foundation-models",
        ),
        ("https://llm-proxy.example.com/aws", "us-east-1", "https://llm-proxy.example.com/aws/foundation-models"),
    ],
)
def test_bedrock_lists_on_the_control_plane_host_of_its_runtime_host(base_url, region, expected):
    provider = ProviderCredential(kind="bedrock", base_url=base_url, region=region)
    assert _bedrock_control_url(provider) == expected


@pytest.mark.parametrize(("kind", "path"), [("anthropic", "/html"), ("gemini", "/html/v1")])
def test_a_200_web_page_is_not_connected_for_other_kinds_either(acme, upstream, kind, path):
    # The OpenAI fake answers any GET under /html/v1/models with a web page, as a portal would.
    provider = alices_provider(acme, kind, f"http://{upstream.host}:{upstream.port}{path}", "sk-alice-key-0001")
    result = provider_test_connection(provider)
    assert not result.ok and "answered 200 but not JSON" in result.message


@pytest.mark.parametrize(("kind", "path"), [("anthropic", "/odd"), ("gemini", "/odd/v1")])
def test_200_json_without_the_kinds_model_list_is_not_connected(acme, upstream, kind, path):
    provider = alices_provider(acme, kind, f"http://{upstream.host}:{upstream.port}{path}", "sk-alice-key-0001")
    result = provider_test_connection(provider)
    assert not result.ok and "not with a list of models" in result.message
