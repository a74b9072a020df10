"""The console's Data policies page: Alice (owner of acme) edits the PII policy, the cache
settings and a key's own policy, and previews what a policy does to a pasted text; Charlie (viewer)
reads; Erin (member) cannot switch the policy off for her own key; Bob (globex) gets 404 for acme's."""

from __future__ import annotations

import pytest
from django.urls import reverse

from routing.policies.services import tenant_pii_policy_set
from tenants.audit import Actor

pytestmark = pytest.mark.usefixtures("console_defaults")

HTMX = {"HTTP_HX_REQUEST": "true"}
EMAIL = "jane.doe@example.com"


def pii_form(**changes) -> dict:
    data = {
        "source": "own",
        "mode": "enforce",
        "detector_email": "pseudonymize",
        "detector_card": "block",
        "custom": "order_id redact ORD-\\d{6}",
        "terms": "Project Falcon\n",
        "terms_action": "redact",
    }
    return {k: v for k, v in {**data, **changes}.items() if v is not None}


def url(name: str, slug: str = "acme", **kwargs) -> str:
    return reverse(name, kwargs={"slug": slug, **kwargs})


def test_alice_saves_the_pii_policy_and_the_page_shows_it(world, client_as):
    client = client_as(world.alice)
    page = client.get(url("policies"))
    assert page.status_code == 200
    assert b"Data policies" in page.content and b'aria-current="page"' in page.content
    response = client.post(url("policies"), pii_form(), **HTMX)
    assert response.status_code == 200
    assert "Saved ✓" in response.content.decode()
    world.acme.refresh_from_db()
    assert world.acme.pii_policy == {
        "mode": "enforce",
        "detectors": {"email": "pseudonymize", "card": "block"},
        "custom": [{"name": "order_id", "pattern": r"ORD-\d{6}", "action": "redact"}],
        "terms": {"words": ["Project Falcon"], "action": "redact"},
        "scan_responses": False,
    }
    # The saved policy comes back into the editor.
    page = client.get(url("policies")).content.decode()
    assert "order_id redact ORD-\\d{6}" in page
    assert '<option value="pseudonymize" selected>' in page
    # "No PII policy" removes it.
    client.post(url("policies"), pii_form(source="none"), **HTMX)
    world.acme.refresh_from_db()
    assert world.acme.pii_policy is None


BAD_FORMS = [
    ({"custom": "order_id redact ORD-(\\d{6}"}, "Line 1 (pattern): not a valid regular expression"),
    ({"custom": "\norder_id shred ORD-\\d{6}"}, "Line 2 (action): unknown action"),
    ({"custom": "order_id ORD-\\d{6}"}, "Line 1: write a name, an action and a pattern"),
    ({"custom": "order_id redact a\norder_id redact b"}, "used twice"),
    ({"detector_email": "shred"}, "Select a valid choice"),
]


def test_a_bad_policy_keeps_what_alice_typed_and_saves_nothing(world, client_as):
    client = client_as(world.alice)
    for changes, message in BAD_FORMS:
        response = client.post(url("policies"), pii_form(**changes), **HTMX)
        assert response.status_code == 200
        html = response.content.decode()
        assert message in html, changes
        typed = changes.get("custom", "").strip().splitlines()
        assert all(line in html for line in typed), changes
    world.acme.refresh_from_db()
    assert world.acme.pii_policy is None


def test_alice_sets_the_cache_and_a_bad_ttl_is_refused(world, client_as):
    client = client_as(world.alice)
    response = client.post(
        url("policy-cache"), {"enabled": "on", "ttl_s": "600", "models": "gpt-4o-mini, later"}, **HTMX
    )
    assert "Saved ✓" in response.content.decode()
    world.acme.refresh_from_db()
    assert world.acme.cache_policy == {"enabled": True, "ttl_s": 600, "models": ["gpt-4o-mini", "later"]}
    response = client.post(url("policy-cache"), {"enabled": "on", "ttl_s": str(31 * 86400)}, **HTMX)
    assert "less than or equal to 2592000" in response.content.decode()
    world.acme.refresh_from_db()
    assert world.acme.cache_policy["ttl_s"] == 600


def test_charlie_reads_the_policies_but_cannot_save(world, client_as):
    tenant_pii_policy_set(world.acme, policy={"detectors": {"ip": "mask"}}, actor=Actor.cli())
    client = client_as(world.charlie)
    page = client.get(url("policies")).content.decode()
    assert '<option value="mask" selected>' in page
    assert "Save PII policy" not in page
    assert client.post(url("policies"), pii_form()).status_code == 403


def test_alice_gives_a_key_its_own_policy_and_bob_gets_404(world, client_as):
    key = world.objects["key"]
    client = client_as(world.alice)
    assert client.get(url("key-policy", key_id=key.id)).status_code == 200
    response = client.post(url("key-policy", key_id=key.id), pii_form(mode="log-only"), **HTMX)
    assert "Saved ✓" in response.content.decode()
    key.refresh_from_db()
    assert key.pii_policy["mode"] == "log-only"
    assert "its own, log only" in client.get(url("policies")).content.decode()
    client.post(url("key-policy", key_id=key.id), pii_form(source="inherit"), **HTMX)
    key.refresh_from_db()
    assert key.pii_policy is None

    bob = client_as(world.bob)
    for slug in ("acme", "globex"):
        assert bob.get(url("key-policy", slug=slug, key_id=key.id)).status_code == 404
        assert bob.post(url("key-policy", slug=slug, key_id=key.id), pii_form()).status_code == 404
    assert bob.post(url("policies"), pii_form()).status_code == 404
    key.refresh_from_db()
    assert key.pii_policy is None


def test_erin_cannot_switch_the_policy_off_for_her_own_key(world, client_as):
    key = world.objects["erin_key"]
    client = client_as(world.erin)
    assert client.get(url("key-policy", key_id=key.id)).status_code == 200
    assert client.post(url("key-policy", key_id=key.id), pii_form(detector_email=None)).status_code == 403
    key.refresh_from_db()
    assert key.pii_policy is None


# --- Preview (the engine: routing.policies.engine) ---------------------------------------------


def preview(client, text: str, answer: str = "", **editor) -> str:
    data = {"text": text, "answer": answer, **editor}
    response = client.post(url("policy-preview"), data, **HTMX)
    assert response.status_code == 200
    return response.content.decode()


def test_alice_previews_the_unsaved_policy_in_the_editor(world, client_as):
    client = client_as(world.alice)
    html = preview(client, f"Mail {EMAIL} about ORD-123456 and Project Falcon", **pii_form())
    sent = html.split('data-preview="sent">')[1].split("</pre>")[0]
    restored = html.split('data-preview="restored">')[1].split("</pre>")[0]
    assert EMAIL not in sent and "ORD-123456" not in sent and "Project Falcon" not in sent
    assert "&lt;EMAIL_1&gt;" in sent
    # The pseudonym comes back as the address; redactions stay redacted.
    assert EMAIL in restored and "ORD-123456" not in restored
    assert "email" in html and "order_id" in html and "pseudonymize" in html
    # An answer the model might give: its placeholder is restored too.
    html = preview(client, f"Mail {EMAIL}", answer="I wrote to <EMAIL_1>.", **pii_form())
    assert f"I wrote to {EMAIL}." in html
    world.acme.refresh_from_db()
    assert world.acme.pii_policy is None  # previewing saves nothing


def test_the_preview_uses_the_saved_policy_without_the_editor_and_shows_a_block(world, client_as):
    client = client_as(world.charlie)
    assert "No PII policy applies" in preview(client, f"Mail {EMAIL}")
    tenant_pii_policy_set(world.acme, policy={"detectors": {"card": "block"}}, actor=Actor.cli())
    html = preview(client, "Card 4111 1111 1111 1111 please")
    assert "Blocked" in html and "card" in html and "4111 1111 1111 1111 please" not in html.split("Blocked")[1]


def test_the_preview_says_what_is_wrong_with_the_editor_and_survives_a_catastrophic_pattern(world, client_as):
    client = client_as(world.alice)
    html = preview(client, "hello", **pii_form(custom="order_id redact ("))
    assert "Fix the policy in the editor first" in html and "not a valid regular expression" in html
    # A pattern that backtracks for ever is refused before it is ever saved or run, saying why; the
    # worker is free again.
    html = preview(client, "a" * 5000 + "!", **pii_form(custom="evil redact (\\w+\\s?)+$"))
    assert "backtracks catastrophically" in html
