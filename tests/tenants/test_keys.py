"""Virtual keys in the console: create (secret once), edit, revoke, rotate; with and without htmx."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from tenants.models import AuditLog, VirtualKey, hash_secret

pytestmark = pytest.mark.usefixtures("console_defaults")

HTMX = {"HTTP_HX_REQUEST": "true"}


def keys_url(slug: str = "acme") -> str:
    return reverse("keys", kwargs={"slug": slug})


def test_it_creates_a_key_and_shows_the_secret_once(world, client_as):
    client = client_as(world.dave)
    response = client.post(
        keys_url(),
        {"name": "search-api", "models": ["gpt-4o-mini"], "metadata": '{"team": "search"}'},
    )
    assert response.status_code == 200
    key = VirtualKey.objects.get(tenant=world.acme, name="search-api")
    secret = response.context["secret"]
    assert key.key_hash == hash_secret(secret)
    assert key.allowed_models == ["gpt-4o-mini"]
    assert key.metadata == {"team": "search"}
    assert key.created_by == world.dave
    body = response.content.decode()
    assert secret in body and 'data-copy="#secret-' in body
    # Never again: the list and the detail page show the prefix only.
    for url in (keys_url(), reverse("key-detail", kwargs={"slug": "acme", "key_id": key.id})):
        assert secret not in client.get(url).content.decode()


def test_htmx_create_answers_with_the_reveal_fragment_and_an_event(world, client_as):
    response = client_as(world.erin).post(keys_url(), {"name": "notebook-2"}, **HTMX)
    assert response.status_code == 200
    body = response.content.decode()
    assert "<html" not in body and 'class="reveal"' in body
    assert "keys-changed" in response["HX-Trigger"]


def test_htmx_create_with_errors_retargets_the_form(world, client_as):
    response = client_as(world.erin).post(keys_url(), {"name": "", "metadata": "[1, 2"}, **HTMX)
    assert response["HX-Retarget"] == "#key-create-form"
    body = response.content.decode()
    assert 'id="key-create-form"' in body
    assert "This field is required." in body
    assert "Not valid JSON" in body
    assert not VirtualKey.objects.filter(tenant=world.acme, name="").exists()


def test_metadata_must_be_an_object(world, client_as):
    response = client_as(world.erin).post(keys_url(), {"name": "x", "metadata": "[1, 2]"})
    assert "Metadata must be a JSON object" in response.content.decode()


def test_expiry_must_be_in_the_future(world, client_as):
    response = client_as(world.erin).post(keys_url(), {"name": "x", "expires_at": "2001-01-01T00:00"})
    assert "The expiry must be in the future." in response.content.decode()
    assert not VirtualKey.objects.filter(name="x").exists()


def test_the_list_renders_as_a_fragment_for_htmx(world, client_as):
    response = client_as(world.alice).get(keys_url(), **HTMX)
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="key-rows"')
    assert "acme-service" in body and "erin-notebook" in body


def test_erin_sees_only_her_own_keys(world, client_as):
    body = client_as(world.erin).get(keys_url()).content.decode()
    assert "erin-notebook" in body
    assert "acme-service" not in body


def test_charlie_the_viewer_sees_every_key_but_no_buttons(world, client_as):
    body = client_as(world.charlie).get(keys_url()).content.decode()
    assert "erin-notebook" in body and "acme-service" in body
    assert "Revoke" not in body and "Create key" not in body


def test_revoking_a_key_marks_it_and_records_it(world, client_as):
    key = world.objects["erin_key"]
    url = reverse("key-revoke", kwargs={"slug": "acme", "key_id": key.id})
    response = client_as(world.erin).post(url, **HTMX)
    assert response.status_code == 200
    assert "revoked" in response.content.decode()
    key.refresh_from_db()
    assert key.revoked and key.revoked_at is not None
    entry = AuditLog.objects.get(action="key.revoke", target_id=str(key.id))
    assert entry.actor == world.erin and entry.ip_address == "127.0.0.1"


def test_revoking_without_javascript_redirects_back_to_the_list(world, client_as):
    key = world.objects["key"]
    response = client_as(world.dave).post(reverse("key-revoke", kwargs={"slug": "acme", "key_id": key.id}))
    assert response.status_code == 302 and response["Location"] == keys_url()


def test_rotating_gives_a_new_secret_and_kills_the_old_one(world, client_as):
    key = world.objects["erin_key"]
    old_secret = world.objects["erin_key_secret"]
    url = reverse("key-rotate", kwargs={"slug": "acme", "key_id": key.id})
    response = client_as(world.erin).post(url, **HTMX)
    assert response["HX-Retarget"] == "#secret-reveal"
    new_secret = response.context["secret"]
    assert new_secret != old_secret and new_secret in response.content.decode()
    key.refresh_from_db()
    assert key.key_hash == hash_secret(new_secret)
    assert not VirtualKey.objects.filter(key_hash=hash_secret(old_secret)).exists()


def test_a_revoked_key_cannot_be_rotated(world, client_as):
    key = world.objects["erin_key"]
    client = client_as(world.erin)
    client.post(reverse("key-revoke", kwargs={"slug": "acme", "key_id": key.id}))
    response = client.post(reverse("key-rotate", kwargs={"slug": "acme", "key_id": key.id}), follow=True)
    assert "cannot be rotated" in response.content.decode()


def test_editing_a_key_changes_models_expiry_and_metadata(world, client_as):
    key = world.objects["erin_key"]
    url = reverse("key-detail", kwargs={"slug": "acme", "key_id": key.id})
    response = client_as(world.erin).post(
        url,
        {
            "name": "erin-notebook",
            "models": ["acme-secret-model"],
            "expires_at": "2099-01-01T12:00",
            "metadata": '{"a": 1}',
        },
        **HTMX,
    )
    assert "Saved ✓" in response.content.decode()
    key.refresh_from_db()
    assert key.allowed_models == ["acme-secret-model"]
    assert key.expires_at.year == 2099
    assert key.metadata == {"a": 1}
    entry = AuditLog.objects.get(action="key.update", target_id=str(key.id))
    assert set(entry.changes) == {"models", "expires_at", "metadata"}


def test_erin_cannot_edit_alices_key_even_by_guessing_its_id(world, client_as):
    key = world.objects["key"]
    url = reverse("key-detail", kwargs={"slug": "acme", "key_id": key.id})
    response = client_as(world.erin).post(url, {"name": "stolen"})
    assert response.status_code == 404
    key.refresh_from_db()
    assert key.name == "acme-service"


def test_the_secret_never_reaches_the_audit_log(world, client_as):
    response = client_as(world.alice).post(keys_url(), {"name": "audited", "metadata": json.dumps({"k": "v"})})
    secret = response.context["secret"]
    dump = json.dumps(list(AuditLog.objects.values()), default=str)
    assert secret not in dump
    assert world.objects["key_secret"] not in dump
