"""Names, secrets, headers and rule conditions of the routing config are bounded and printable, refused
with the field and the limit by the YAML (with its line), the API and the services alike."""

from __future__ import annotations

import json

import pytest
import yaml

from routing.models import ModelDeployment, ProviderCredential
from routing.services import MAX_HEADERS, MAX_RULES
from tenants.bounds import MAX_SECRET_CHARS
from tenants.config import ConfigError, apply_config
from tenants.models import Role

BASE = {"tenant": "acme", "providers": [{"name": "main", "kind": "mock"}]}


def apply(**sections) -> None:
    apply_config(yaml.safe_dump({**BASE, **sections}, allow_unicode=True, sort_keys=False))


def model(name: str = "chat", upstream: str = "mock-chat") -> dict:
    return {"name": name, "deployments": [{"provider": "main", "model": upstream}]}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("sections", "message"),
    [
        (
            {"providers": [{"name": "main\x1b[2J", "kind": "mock"}]},
            "line 3, providers[0].name: A provider name must be printable text",
        ),
        (
            {"providers": [{"name": "p" * 101, "kind": "mock"}]},
            "line 3, providers[0].name: A provider name may have at most 100 characters (this has 101).",
        ),
        ({"models": [model("m" * 201)]}, "models[0].name: A model name may have at most 200 characters (this has 201)"),
        ({"models": [model("chat\nstatus=999")]}, "models[0].name: A model name must be printable text"),
        (
            {"models": [model(upstream="u" * 201)]},
            "models[0].deployments[0].model: An upstream model name may have at most 200 characters",
        ),
    ],
)
def test_yaml_names_are_bounded_and_printable(sections, message):
    with pytest.raises(ConfigError) as exc:
        apply(**sections)
    assert message in str(exc.value)
    assert not ModelDeployment.objects.exists() and not ProviderCredential.objects.exists()


@pytest.mark.django_db
def test_yaml_provider_secrets_and_headers_are_bounded(monkeypatch):
    monkeypatch.setenv("HUGE_KEY", "k" * (MAX_SECRET_CHARS + 1))
    with pytest.raises(ConfigError) as exc:
        apply(providers=[{"name": "main", "kind": "openai-compatible", "base_url": "https://llm.example.com/v1",
                          "api_key": "env:HUGE_KEY"}])  # fmt: skip
    assert "providers[0].api_key: An API key may have at most 8,192 characters (this has 8,193)." in str(exc.value)
    headers = {f"X-H{i}": "v" for i in range(MAX_HEADERS + 1)}
    with pytest.raises(ConfigError) as exc:
        apply(providers=[{"name": "main", "kind": "openai-compatible", "base_url": "https://llm.example.com/v1",
                          "headers": headers}])  # fmt: skip
    assert f"providers[0].headers: A provider has at most {MAX_HEADERS} extra headers (this has 33)." in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        apply(providers=[{"name": "main", "kind": "openai-compatible", "base_url": "https://llm.example.com/v1",
                          "headers": {"X-Big": "v" * (MAX_SECRET_CHARS + 1)}}])  # fmt: skip
    assert "the value of X-Big has at most 8,192 characters" in str(exc.value)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"tags": ["t" * 101]}, "rules[0].if.tags[0]: A name may have at most 100 characters (this has 101)."),
        ({"user": ["u" * 201]}, "rules[0].if.user[0]: A name may have at most 200 characters"),
        ({"key": "ci\x00"}, "rules[0].if.key: A name must be printable text"),
        ({"tags": [f"t{i}" for i in range(101)]}, "rules[0].if.tags: at most 100 names in one condition"),
        ({"metadata": {"team": "v" * 501}}, "rules[0].if.metadata.team: A metadata value may have at most 500"),
        ({"metadata": {"k" * 101: "v"}}, "rules[0].if.metadata: A metadata key may have at most 100 characters"),
    ],
)
def test_rule_conditions_are_bounded(condition, message):
    with pytest.raises(ConfigError) as exc:
        apply(models=[model()], rules=[{"if": condition, "route": "chat"}])
    assert message in str(exc.value)


@pytest.mark.django_db
def test_a_tenant_has_at_most_so_many_rules():
    rules = [{"if": {"tags": [f"t{i}"]}, "route": "chat"} for i in range(MAX_RULES + 1)]
    with pytest.raises(ConfigError) as exc:
        apply(models=[model()], rules=rules)
    assert f"rules: A tenant has at most {MAX_RULES} rules (this has 101)." in str(exc.value)
    apply(models=[model()], rules=rules[:MAX_RULES])


@pytest.mark.usefixtures("console_defaults")
def test_the_api_refuses_an_oversized_provider_key_naming_the_field(world, api_as):
    response = api_as(Role.ADMIN).post(
        "/api/v1/providers/",
        data=json.dumps({"name": "big", "kind": "mock", "api_key": "k" * (MAX_SECRET_CHARS + 1)}),
        content_type="application/json",
    )
    assert response.status_code == 400, response.content
    assert "api_key" in response.json()["error"]["fields"]


@pytest.mark.usefixtures("console_defaults")
def test_the_api_refuses_a_model_name_with_control_characters(world, api_as):
    provider = world.objects["provider"].name
    response = api_as(Role.ADMIN).post(
        "/api/v1/models/",
        data=json.dumps({"name": "chat\x1fstatus=1", "deployments": [{"provider": provider, "model": "mock-chat"}]}),
        content_type="application/json",
    )
    assert response.status_code == 400, response.content
    assert "printable" in response.json()["error"]["message"]


def test_rule_and_budget_tags_are_bounded_like_the_tags_the_proxy_keeps():
    from proxy.inbound.openai import MAX_TAG_LENGTH
    from tenants.bounds import MAX_TAG_CHARS

    assert MAX_TAG_CHARS == MAX_TAG_LENGTH
