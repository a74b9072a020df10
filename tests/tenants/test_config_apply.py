"""`gateway apply`, `gateway export` and `gateway mint-key`: the declarative config contract."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from gateway_project.common import crypto
from routing.models import ModelDeployment, ProviderCredential
from tenants.models import AuditLog, Tenant, VirtualKey, hash_secret

pytestmark = pytest.mark.django_db

ACME = """\
tenant: acme
name: Acme Corp
providers:
  - name: main
    kind: openai
    base_url: https://api.openai.com/v1
    api_key: env:UPSTREAM_KEY
  - name: local
    kind: mock
models:
  - name: gpt-4o-mini
    deployments:
      - provider: main
        model: gpt-4o-mini
      - provider: local
        model: mock-chat
"""


@pytest.fixture(autouse=True)
def upstream_key(monkeypatch):
    monkeypatch.setenv("UPSTREAM_KEY", "sk-proj-realistic-secret-1234")


@pytest.fixture(autouse=True)
def no_dns(monkeypatch):
    # api.openai.com must not be resolved from the test machine (no network); treat it as public.
    import socket

    real = socket.getaddrinfo

    def fake(host, *args, **kwargs):
        if host == "api.openai.com":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("104.18.7.192", 443))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


def apply(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tenant.yaml"
    path.write_text(text)
    out = io.StringIO()
    call_command("gateway", "apply", str(path), stdout=out)
    return out.getvalue()


def apply_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(CommandError) as info:
        apply(tmp_path, text)
    return str(info.value)


def test_apply_creates_the_tenant_and_prints_what_changed(tmp_path):
    out = apply(tmp_path, ACME)
    assert out.splitlines() == ["+ tenant acme", "+ provider main", "+ provider local", "+ model gpt-4o-mini"]
    tenant = Tenant.objects.get(slug="acme")
    assert tenant.name == "Acme Corp"
    deployments = list(ModelDeployment.objects.filter(tenant=tenant).values_list("provider__name", "upstream_model"))
    assert deployments == [("main", "gpt-4o-mini"), ("local", "mock-chat")]


def test_apply_is_idempotent(tmp_path):
    apply(tmp_path, ACME)
    audit_rows = AuditLog.objects.count()
    assert apply(tmp_path, ACME).strip() == "tenant acme: no changes"
    assert AuditLog.objects.count() == audit_rows


def test_apply_updates_and_removes_what_the_file_no_longer_has(tmp_path):
    apply(tmp_path, ACME)
    changed = ACME.replace("      - provider: local\n        model: mock-chat\n", "").replace(
        "  - name: local\n    kind: mock\n", ""
    )
    out = apply(tmp_path, changed)
    assert out.splitlines() == ["~ model gpt-4o-mini", "- provider local"]
    assert not ProviderCredential.objects.filter(name="local").exists()


def test_provider_keys_are_encrypted_at_rest_and_never_printed(tmp_path):
    out = apply(tmp_path, ACME)
    provider = ProviderCredential.objects.get(name="main")
    assert "sk-proj-realistic-secret-1234" not in provider.api_key_encrypted
    assert crypto.decrypt(provider.api_key_encrypted) == "sk-proj-realistic-secret-1234"
    assert provider.masked_key == "…1234"
    assert "sk-proj" not in out
    assert "sk-proj" not in str(list(AuditLog.objects.values_list("changes", flat=True)))


def test_encryption_keys_rotate(tmp_path, settings):
    from routing.services import rotate_encryption

    old = crypto.generate_key()
    settings.GATEWAY_ENCRYPTION_KEY = old
    crypto.reset_cache()
    try:
        apply(tmp_path, ACME)
        token = ProviderCredential.objects.get(name="main").api_key_encrypted
        new = crypto.generate_key()
        settings.GATEWAY_ENCRYPTION_KEY = f"{new},{old}"
        crypto.reset_cache()
        assert rotate_encryption() == 1
        rotated = ProviderCredential.objects.get(name="main").api_key_encrypted
        assert rotated != token
        settings.GATEWAY_ENCRYPTION_KEY = new  # the old key is gone: only the rotated token still decrypts
        crypto.reset_cache()
        assert crypto.decrypt(rotated) == "sk-proj-realistic-secret-1234"
        with pytest.raises(crypto.DecryptionError):
            crypto.decrypt(token)
    finally:
        crypto.reset_cache()


def test_export_applies_back_unchanged_without_secrets(tmp_path):
    apply(tmp_path, ACME)
    out = io.StringIO()
    call_command("gateway", "export", "--tenant", "acme", stdout=out)
    exported = out.getvalue()
    assert "sk-proj" not in exported
    assert "env:UPSTREAM_KEY" in exported
    assert apply(tmp_path, exported).strip() == "tenant acme: no changes"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tenant: acme\nproviders: [\n", "line 3"),
        ("tenant: acme\ncolour: blue\n", "line 2, colour: unknown field 'colour'"),
        (
            ACME.replace("    kind: mock\n", "    kind: mock\n    region: eu\n"),
            "line 10, providers[1].region: unknown field",
        ),
        (
            ACME.replace("      - provider: local", "      - provider: nowhere"),
            "line 15, models[0].deployments[1].provider",
        ),
        (ACME.replace("kind: openai\n", "kind: opeani\n"), "line 5, providers[0].kind: unknown kind 'opeani'"),
        (ACME.replace("env:UPSTREAM_KEY", "env:NOT_SET_ANYWHERE"), "NOT_SET_ANYWHERE is not set"),
        (ACME.replace("tenant: acme", "tenant: Acme!"), "line 1, tenant"),
        ("name: no tenant\n", "missing required field 'tenant'"),
        ("", "empty"),
        (ACME + "  - name: gpt-4o-mini\n    deployments:\n      - provider: main\n        model: x\n", "used twice"),
        (
            ACME.replace("base_url: https://api.openai.com/v1", "base_url: http://169.254.169.254/latest"),
            "a cloud metadata address, which is never allowed",
        ),
    ],
)
def test_bad_files_fail_naming_the_line_or_field_and_change_nothing(tmp_path, text, expected):
    message = apply_error(tmp_path, text)
    assert expected in message
    assert not Tenant.objects.exists()
    assert not ProviderCredential.objects.exists()


def test_a_failure_late_in_the_file_rolls_back_everything(tmp_path, settings):
    apply(tmp_path, ACME)
    # A private base URL is only refused when applied (it needs a DNS answer): providers before it
    # were already written inside the transaction and must be rolled back too.
    bad = ACME.replace("name: Acme Corp", "name: Renamed").replace(
        "  - name: local\n    kind: mock\n",
        "  - name: local\n    kind: mock\n  - name: lan\n    kind: openai-compatible\n    base_url: http://10.1.2.3/v1\n",
    )
    assert "set GATEWAY_PRIVATE_UPSTREAMS=10.0.0.0/8 to allow" in apply_error(tmp_path, bad)
    assert Tenant.objects.get(slug="acme").name == "Acme Corp"
    assert not ProviderCredential.objects.filter(name="lan").exists()


def test_mint_key_prints_only_the_secret(tmp_path):
    apply(tmp_path, ACME)
    out = io.StringIO()
    call_command("gateway", "mint-key", "--tenant", "acme", "--name", "ci", "--models", "gpt-4o-mini", stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sk-gw-")
    key = VirtualKey.objects.get(name="ci")
    assert key.key_hash == hash_secret(lines[0])
    assert lines[0] not in str(VirtualKey.objects.values())
    assert key.allowed_models == ["gpt-4o-mini"]
    assert key.prefix == lines[0][:10]


def test_mint_key_for_an_unknown_tenant_fails():
    with pytest.raises(CommandError, match="no tenant with slug 'nope'"):
        call_command("gateway", "mint-key", "--tenant", "nope", "--name", "x", stdout=io.StringIO())


def test_seed_demo_is_idempotent_and_its_key_works():
    from routing.demo import demo_key_secret

    call_command("gateway", "seed-demo", stdout=io.StringIO())
    out = io.StringIO()
    call_command("gateway", "seed-demo", stdout=out)
    assert out.getvalue() == ""
    key = VirtualKey.objects.get(key_hash=hash_secret(demo_key_secret()))
    assert key.is_active and key.tenant.slug == "demo"
