"""Providers, models, members, API tokens, settings and the audit log in the console."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.urls import reverse

from routing.models import ModelDeployment, ProviderCredential
from tenants.models import AuditLog, Invitation, ManagementToken, Membership, Role, Tenant, VirtualKey, hash_secret

pytestmark = pytest.mark.usefixtures("console_defaults")

HTMX = {"HTTP_HX_REQUEST": "true"}


def url(view: str, **kwargs) -> str:
    return reverse(view, kwargs={"slug": "acme", **kwargs})


# --- Providers -------------------------------------------------------------------------------------


def test_adding_a_provider_encrypts_the_key_and_never_shows_it(world, client_as):
    client = client_as(world.dave)
    response = client.post(
        url("providers"),
        {"name": "openai-prod", "kind": "openai", "base_url": "", "api_key": "sk-live-abcdefgh5678"},
        **HTMX,
    )
    assert "Added" in response.content.decode() and "providers-changed" in response["HX-Trigger"]
    provider = ProviderCredential.objects.get(tenant=world.acme, name="openai-prod")
    assert provider.api_key_last4 == "5678" and "abcdefgh" not in provider.api_key_encrypted
    for page in (url("providers"), url("provider-detail", provider_id=provider.id)):
        body = client.get(page).content.decode()
        assert "sk-live-abcdefgh5678" not in body and "…5678" in body
    assert "abcdefgh" not in json.dumps(list(AuditLog.objects.values()), default=str)


def test_editing_a_provider_without_a_key_keeps_the_stored_key(world, client_as):
    client = client_as(world.dave)
    client.post(url("providers"), {"name": "compat", "kind": "openai", "api_key": "sk-first-key-000011112222"})
    provider = ProviderCredential.objects.get(tenant=world.acme, name="compat")
    encrypted = provider.api_key_encrypted
    response = client.post(
        url("provider-detail", provider_id=provider.id), {"kind": "openai", "base_url": "", "api_key": ""}, **HTMX
    )
    assert "Saved ✓" in response.content.decode()
    provider.refresh_from_db()
    assert provider.api_key_encrypted == encrypted


def test_a_duplicate_provider_name_is_an_inline_error(world, client_as):
    response = client_as(world.dave).post(url("providers"), {"name": "mock", "kind": "mock"}, **HTMX)
    assert "There is already a provider named mock." in response.content.decode()


def test_a_private_base_url_is_refused(world, client_as, settings):
    settings.GATEWAY_PRIVATE_UPSTREAMS = []
    response = client_as(world.dave).post(
        url("providers"), {"name": "internal", "kind": "openai-compatible", "base_url": "http://10.0.0.5/v1"}, **HTMX
    )
    assert "set GATEWAY_PRIVATE_UPSTREAMS=10.0.0.0/8 to allow" in response.content.decode()
    assert not ProviderCredential.objects.filter(name="internal").exists()


class _ModelsEndpoint(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path == "/v1/models" and self.headers.get("Authorization") == "Bearer sk-good-key-123456"
        body = {"data": [{"id": "gpt-4o"}, {"id": "gpt-4o-mini"}]} if ok else {"error": {"message": "bad key"}}
        payload = json.dumps(body).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def models_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ModelsEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.mark.parametrize(
    ("api_key", "verdict"),
    [("sk-good-key-123456", "Connection works."), ("sk-bad-key-0000000", "refused the API key (HTTP 401)")],
)
def test_test_connection_reports_what_the_provider_said(world, client_as, models_server, api_key, verdict):
    client = client_as(world.dave)
    client.post(
        url("providers"), {"name": "local", "kind": "openai-compatible", "base_url": models_server, "api_key": api_key}
    )
    provider = ProviderCredential.objects.get(tenant=world.acme, name="local")
    response = client_as(world.charlie).post(url("provider-test", provider_id=provider.id), **HTMX)
    body = response.content.decode()
    assert verdict in body
    assert api_key not in body


def test_test_connection_explains_an_unreachable_server(world, client_as, models_server):
    dead = models_server.rsplit(":", 1)[0] + ":9/v1"
    client = client_as(world.dave)
    client.post(
        url("providers"),
        {"name": "dead", "kind": "openai-compatible", "base_url": dead, "api_key": "sk-x-123456789012"},
    )
    provider = ProviderCredential.objects.get(tenant=world.acme, name="dead")
    body = client.post(url("provider-test", provider_id=provider.id)).content.decode()
    assert "Connection failed." in body and "Could not connect" in body


def test_the_starter_adds_the_mock_provider_and_a_model(db, client_as):
    from tenants.audit import Actor
    from tenants.services import tenant_create
    from tests.helpers.people import make_user

    grace = make_user("grace@new.example")
    tenant = tenant_create(name="New", owner=grace, actor=Actor(user=grace))
    client = client_as(grace)
    overview = client.get(reverse("tenant-overview", kwargs={"slug": tenant.slug})).content.decode()
    assert "Try the built-in mock instead" in overview
    response = client.post(reverse("starter", kwargs={"slug": tenant.slug}))
    assert response["Location"] == reverse("keys", kwargs={"slug": tenant.slug})
    assert ModelDeployment.objects.get(tenant=tenant).model_name == "mock-chat"


def test_deleting_a_provider_removes_its_deployments(world, client_as):
    provider = world.objects["provider"]
    client_as(world.dave).post(url("provider-delete", provider_id=provider.id))
    assert not ModelDeployment.objects.filter(tenant=world.acme).exists()


# --- Models ----------------------------------------------------------------------------------------


def _deployment_form(rows: list[tuple[int | str, str]], initial: int = 0, **extra) -> dict:
    data = {"dep-TOTAL_FORMS": str(len(rows)), "dep-INITIAL_FORMS": str(initial), **extra}
    for i, (provider, model) in enumerate(rows):
        data[f"dep-{i}-provider"] = str(provider)
        data[f"dep-{i}-model"] = model
    return data


def test_adding_a_model(world, client_as):
    pid = world.objects["provider"].id
    response = client_as(world.dave).post(
        url("models"), {"name": "fast", **_deployment_form([(pid, "mock-chat")])}, **HTMX
    )
    assert "Added fast." in response.content.decode()
    assert list(
        ModelDeployment.objects.filter(tenant=world.acme, model_name="fast").values_list("upstream_model", flat=True)
    ) == ["mock-chat"]


def test_a_model_needs_a_deployment(world, client_as):
    response = client_as(world.dave).post(url("models"), {"name": "empty", **_deployment_form([("", "")])}, **HTMX)
    assert "Add at least one deployment" in response.content.decode()
    assert response["HX-Retarget"] == "#model-create-form"


def test_a_model_cannot_use_globex_provider(world, client_as):
    response = client_as(world.dave).post(
        url("models"), {"name": "x", **_deployment_form([(world.objects["g_provider"].id, "m")])}
    )
    assert "Select a valid choice" in response.content.decode()
    assert not ModelDeployment.objects.filter(model_name="x").exists()


def test_editing_deployments_reorders_and_deletes(world, client_as):
    pid = world.objects["provider"].id
    data = _deployment_form([(pid, "mock-chat"), (pid, "second")], initial=1)
    client = client_as(world.dave)
    client.post(url("model-detail", name="acme-secret-model"), data)
    order = list(
        ModelDeployment.objects.filter(tenant=world.acme, model_name="acme-secret-model").values_list(
            "upstream_model", flat=True
        )
    )
    assert order == ["mock-chat", "second"]
    data = _deployment_form([(pid, "mock-chat"), (pid, "second")], initial=2, **{"dep-0-DELETE": "on"})
    response = client.post(url("model-detail", name="acme-secret-model"), data, **HTMX)
    assert "Saved ✓" in response.content.decode()
    order = list(
        ModelDeployment.objects.filter(tenant=world.acme, model_name="acme-secret-model").values_list(
            "upstream_model", flat=True
        )
    )
    assert order == ["second"]


def test_model_names_with_slashes_have_pages(world, client_as):
    pid = world.objects["provider"].id
    client = client_as(world.dave)
    client.post(url("models"), {"name": "team/fast", **_deployment_form([(pid, "mock-chat")])})
    assert client.get(url("model-detail", name="team/fast")).status_code == 200
    client.post(url("model-delete", name="team/fast"))
    assert not ModelDeployment.objects.filter(model_name="team/fast").exists()


# --- Members, invitations, tokens ------------------------------------------------------------------


def test_alice_invites_by_email(world, client_as, django_capture_on_commit_callbacks):
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = client_as(world.alice).post(
            url("members"), {"email": "frank@acme.example", "role": "viewer"}, **HTMX
        )
    assert "Invitation sent to frank@acme.example." in response.content.decode()
    assert "members-changed" in response["HX-Trigger"]
    assert mail.outbox[0].to == ["frank@acme.example"] and "Acme Corp" in mail.outbox[0].subject
    invitation = Invitation.objects.get(tenant=world.acme, email="frank@acme.example")
    assert invitation.role == Role.VIEWER and invitation.invited_by == world.alice


def test_inviting_again_replaces_the_pending_invitation(world, client_as):
    client = client_as(world.alice)
    client.post(url("members"), {"email": "frank@acme.example", "role": "viewer"})
    client.post(url("members"), {"email": "frank@acme.example", "role": "admin"})
    assert list(Invitation.objects.filter(email="frank@acme.example").values_list("role", flat=True)) == ["admin"]


def test_changing_a_role_inline(world, client_as):
    charlie = world.objects["memberships"]["charlie"]
    response = client_as(world.alice).post(url("member-role", membership_id=charlie.id), {"role": "admin"}, **HTMX)
    assert response.content.decode().lstrip().startswith(f'<tr id="member-{charlie.id}"')
    charlie.refresh_from_db()
    assert charlie.role == Role.ADMIN


def test_the_last_owner_cannot_leave_or_be_demoted(world, client_as):
    alice = world.objects["memberships"]["alice"]
    client = client_as(world.alice)
    response = client.post(url("member-role", membership_id=alice.id), {"role": "viewer"}, **HTMX)
    assert "at least one owner" in response.content.decode()
    response = client.post(url("member-remove", membership_id=alice.id), **HTMX)
    assert "at least one owner" in response.content.decode()
    alice.refresh_from_db()
    assert alice.role == Role.OWNER


def test_removing_a_member(world, client_as):
    erin = world.objects["memberships"]["erin"]
    response = client_as(world.alice).post(url("member-remove", membership_id=erin.id), **HTMX)
    assert response.status_code == 200 and response.content == b""
    assert not Membership.objects.filter(id=erin.id).exists()
    assert client_as(world.erin).get(url("keys")).status_code == 404
    assert AuditLog.objects.filter(action="member.remove", tenant=world.acme).exists()


def test_cancelling_an_invitation(world, client_as):
    invitation = world.objects["invitation"]
    client_as(world.alice).post(url("invitation-revoke", invitation_id=invitation.id))
    assert not Invitation.objects.filter(id=invitation.id).exists()


def test_minting_a_token_in_the_console(world, client_as):
    response = client_as(world.dave).post(url("tokens"), {"name": "terraform", "role": "admin"}, **HTMX)
    secret = response.context["secret"]
    assert secret in response.content.decode()
    token = ManagementToken.objects.get(token_hash=hash_secret(secret))
    assert token.created_by == world.dave and token.role == Role.ADMIN
    assert secret not in client_as(world.dave).get(url("tokens")).content.decode()


def test_an_admin_cannot_mint_an_owner_token(world, client_as):
    response = client_as(world.dave).post(url("tokens"), {"name": "escalate", "role": "owner"})
    assert "Select a valid choice" in response.content.decode()
    assert not ManagementToken.objects.filter(name="escalate").exists()


def test_revoking_a_token(world, client_as):
    token = world.objects["token"]
    response = client_as(world.dave).post(url("token-revoke", token_id=token.id), **HTMX)
    assert "revoked" in response.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None


# --- Settings and the audit log --------------------------------------------------------------------


def test_renaming_the_tenant(world, client_as):
    response = client_as(world.dave).post(url("tenant-settings"), {"name": "Acme Holdings"}, **HTMX)
    assert "Saved ✓" in response.content.decode()
    world.acme.refresh_from_db()
    assert world.acme.name == "Acme Holdings"


def test_deleting_the_tenant_needs_the_slug_typed(world, client_as):
    client = client_as(world.alice)
    response = client.post(url("tenant-delete"), {"confirm": "acm"}, **HTMX)
    assert "Type acme exactly" in response.content.decode()
    assert Tenant.objects.filter(slug="acme").exists()
    response = client.post(url("tenant-delete"), {"confirm": "acme"}, **HTMX)
    assert response["HX-Redirect"] == reverse("home")
    assert not Tenant.objects.filter(slug="acme").exists()
    assert not VirtualKey.objects.filter(name="acme-service").exists()
    assert AuditLog.objects.filter(action="tenant.delete", target_label="acme", actor=world.alice).exists()


def test_export_downloads_yaml(world, client_as):
    response = client_as(world.dave).get(url("tenant-export"))
    assert response["Content-Type"].startswith("application/yaml")
    assert b"tenant: acme" in response.content


def test_the_audit_log_shows_who_did_what_from_where(world, client_as):
    client_as(world.dave).post(url("keys"), {"name": "audited-key"}, REMOTE_ADDR="198.51.100.4")
    body = client_as(world.alice).get(url("audit")).content.decode()
    assert "key.create" in body and "dave@acme.example" in body and "198.51.100.4" in body
    assert "globex" not in body


def test_the_audit_log_pages_with_htmx(world, client_as):
    AuditLog.objects.bulk_create(
        [AuditLog(tenant=world.acme, actor_label="cli", action=f"test.{i}") for i in range(60)]
    )
    client = client_as(world.alice)
    first = client.get(url("audit")).content.decode()
    assert "Load older entries" in first
    more = client.get(url("audit") + "?page=2", **HTMX).content.decode()
    assert "<html" not in more and "<tr>" in more


def test_nothing_in_the_audit_log_is_a_secret(world, client_as):
    client = client_as(world.alice)
    created = client.post(url("keys"), {"name": "k"}).context["secret"]
    rotated = client.post(url("key-rotate", key_id=world.objects["key"].id)).context["secret"]
    token = client.post(url("tokens"), {"name": "t", "role": "viewer"}).context["secret"]
    client.post(url("providers"), {"name": "p", "kind": "openai", "api_key": "sk-provider-secret-9999"})
    dump = json.dumps(list(AuditLog.objects.values()), default=str)
    for secret in (created, rotated, token, "sk-provider-secret-9999", world.objects["token_secret"]):
        assert secret not in dump
