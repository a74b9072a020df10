"""The invoice subcommands of `manage.py gateway`: invoice, finalize-invoices, and the invoice half of
reconcile. Kept here so the command module only wires them in."""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from billing.invoice_rules import parse_month
from billing.invoicing.exports import invoice_csv, invoice_json, invoice_pdf
from billing.invoicing.services import finalize_invoices, invoice_for_month, invoice_refresh
from billing.models import Invoice, InvoiceStatus
from billing.selectors import invoice_reconcile
from billing.stripe.sync import wait_for_background
from tenants.audit import Actor
from tenants.models import Tenant


def add_arguments(sub: Any) -> None:
    p = sub.add_parser("invoice", help="Build or refresh a month's invoice (a finalized one prints as it is)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--month", required=True, help="YYYY-MM, a calendar month in the tenant's time zone")
    p.add_argument("--json", action="store_true", help="print the invoice as JSON")
    p.add_argument("--csv", default=None, metavar="FILE", help="write the CSV export to FILE (- for stdout)")
    p.add_argument("--pdf", default=None, metavar="FILE", help="write the PDF to FILE")

    p = sub.add_parser("finalize-invoices", help="Finalize invoices of months that have ended (idempotent)")
    p.add_argument("--tenant", default=None)
    p.add_argument("--month", default=None, help="YYYY-MM (default: the month just ended, and older drafts)")
    p.add_argument("--early", action="store_true", help="close the running month now (a tenant that leaves)")


def _tenant(slug: str) -> Tenant:
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None:
        raise CommandError(f"no tenant with slug {slug!r}")
    return tenant


def _month(text: str):
    try:
        return parse_month(text)
    except ValidationError as exc:
        raise CommandError(f"--month {exc.messages[0]}") from None


def cmd_invoice(command: Any, options: dict) -> None:
    tenant = _tenant(options["tenant"])
    invoice = invoice_for_month(tenant, _month(options["month"]))
    if options["csv"]:
        text = invoice_csv(invoice)
        if options["csv"] == "-":
            command.stdout.write(text, ending="")
        else:
            _write(options["csv"], text.encode())
    if options["pdf"]:
        _write(options["pdf"], invoice_pdf(invoice))
    if options["json"]:
        command.stdout.write(json.dumps(invoice_json(invoice)))
    elif options["csv"] != "-":
        command.stdout.write(
            f"{invoice.label} {tenant.slug} {invoice.period_start}..{invoice.period_end} "
            f"{invoice.status} total {invoice.total_usd} USD"
        )


def _write(path: str, data: bytes) -> None:
    try:
        with open(path, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror}") from None


def cmd_finalize_invoices(command: Any, options: dict) -> None:
    tenant = _tenant(options["tenant"]) if options["tenant"] else None
    month = _month(options["month"]) if options["month"] else None
    done = finalize_invoices(tenant=tenant, month=month, early=options["early"], actor=Actor.cli())
    for inv in done:
        command.stdout.write(
            f"{inv.label} {inv.billed_slug} {inv.period_start}..{inv.period_end} finalized, total {inv.total_usd} USD"
        )
    if not done:
        command.stdout.write("nothing to finalize")
    # Without a broker the Stripe pushes run in background threads: give them a chance before we exit.
    wait_for_background()


def reconcile_invoices(command: Any, tenant: Tenant | None) -> int:
    """The invoice half of `gateway reconcile`; returns the number of differences."""
    # Drafts follow the ledger; bring them up to date so only real differences remain.
    drafts = Invoice.objects.filter(status=InvoiceStatus.DRAFT, tenant__isnull=False).select_related("tenant")
    if tenant:
        drafts = drafts.filter(tenant=tenant)
    for draft in drafts:
        invoice_refresh(draft.tenant, draft.month)
    diffs, pending = invoice_reconcile(tenant)
    for d in pending:
        command.stdout.write(
            f"{d.tenant} {d.month}: ledger {d.ledger} vs invoiced {d.invoiced}: "
            "a late correction, billed on the next invoice"
        )
    for d in diffs:
        command.stderr.write(f"{d.tenant} {d.month} {d.what}: ledger {d.ledger} != invoices {d.invoiced}")
    # Said only where there are invoices, so installs without billing print what they always did.
    if not diffs and Invoice.objects.filter(**({"tenant": tenant} if tenant else {})).exists():
        command.stdout.write("invoices match the ledger")
    return len(diffs)
