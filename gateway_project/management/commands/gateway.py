"""`python manage.py gateway <subcommand>`: the operator's command line, on top of every app."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime

from tenants.audit import Actor
from tenants.models import Tenant


def _parse_day(text: str) -> datetime | None:
    from datetime import UTC

    from django.utils.dateparse import parse_date

    try:
        day = parse_date(text)
    except ValueError:
        return None
    return datetime(day.year, day.month, day.day, tzinfo=UTC) if day else None


class Command(BaseCommand):
    help = "Gateway operations: apply, export, mint-key, revoke-key, seed-demo, bootstrap, rotate-encryption"

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, parser_class=CommandParser)

        p = sub.add_parser("apply", help="Create or update one tenant from a YAML file")
        p.add_argument("file", help="path to the YAML file, or - for standard input")

        p = sub.add_parser("export", help="Print a tenant's configuration as YAML")
        p.add_argument("--tenant", required=True)

        p = sub.add_parser("mint-key", help="Create a virtual key; prints the secret as its only line")
        p.add_argument("--tenant", required=True)
        p.add_argument("--name", required=True)
        p.add_argument("--models", default="", help="comma-separated model names (default: all)")
        p.add_argument("--expires", default="", help="ISO 8601 expiry, e.g. 2027-01-01T00:00:00Z")
        p.add_argument("--rpm", type=int, default=None, help="requests per minute for this key")
        p.add_argument("--tpm", type=int, default=None, help="tokens per minute for this key")
        p.add_argument("--max-parallel", type=int, default=None, help="concurrent requests for this key")
        p.add_argument("--budget", default=None, help="hard budget in USD for this key")
        p.add_argument("--budget-period", default="month", choices=["day", "week", "month", "total"])
        p.add_argument(
            "--mcp",
            default=None,
            help='MCP access as JSON, e.g. \'{"github": ["search_issues"], "docs": "*"}\' (default: none)',
        )
        p.add_argument(
            "--admin",
            action="store_true",
            help="an admin key: it may score every call of its tenant, not only its own",
        )

        p = sub.add_parser("spend", help="Spend from the ledger, as exact decimal strings")
        p.add_argument("--tenant", required=True)
        p.add_argument("--since", default=None, help="first day, YYYY-MM-DD (tenant time zone)")
        p.add_argument("--until", default=None, help="last day, YYYY-MM-DD, inclusive")
        p.add_argument("--json", action="store_true", help="print JSON (the only format for now)")

        p = sub.add_parser("reconcile", help="Prove the spend ledger equals the sum of call log costs, day by day")
        p.add_argument("--tenant", default=None)
        p.add_argument("--since", default=None, help="first day, YYYY-MM-DD (tenant time zone)")
        p.add_argument("--until", default=None, help="day after the last, YYYY-MM-DD (exclusive)")

        p = sub.add_parser("rebuild-rollups", help="Recompute a tenant's dashboard rollups from its call logs")
        p.add_argument("--tenant", required=True)
        p.add_argument("--since", required=True, help="first UTC day, YYYY-MM-DD")
        p.add_argument(
            "--until", default=None, help="UTC day to stop before (default: today, which live calls still fill)"
        )

        p = sub.add_parser("export-logs", help="Print a tenant's call logs as CSV or JSON lines, streamed")
        p.add_argument("--tenant", required=True)
        p.add_argument("--since", default=None, help="ISO 8601 date or date-time (UTC unless it has an offset)")
        p.add_argument("--until", default=None, help="ISO 8601 date or date-time, exclusive")
        p.add_argument("--format", default="csv", choices=["csv", "jsonl"])

        p = sub.add_parser("revoke-key", help="Revoke a virtual key by name or prefix")
        p.add_argument("--tenant", required=True)
        p.add_argument("--name", required=True)

        p = sub.add_parser("add-member", help="Add a person to a tenant, creating their account if needed")
        p.add_argument("--tenant", required=True)
        p.add_argument("--email", required=True)
        p.add_argument("--role", required=True, choices=["owner", "admin", "member", "viewer"])
        p.add_argument("--password", default=None, help="set this password (default: they use password reset)")

        p = sub.add_parser("mint-token", help="Create a management API token; prints it as its only line")
        p.add_argument("--tenant", required=True)
        p.add_argument("--name", required=True)
        p.add_argument("--role", required=True, choices=["owner", "admin", "member", "viewer"])

        sub.add_parser("seed-demo", help="Create the demo tenant, key and mock model (idempotent)")
        sub.add_parser("quickstart", help="Print the demo key, a curl command and the console login")
        sub.add_parser(
            "bootstrap",
            help="Before `make run` serves: check the port, migrate and collect static files if needed, "
            "seed the demo, print the quickstart",
        )
        p = sub.add_parser("preflight", help="Before `make serve`: check the port, collect static files if changed")
        p.add_argument("--static-only", action="store_true", help="only collect static files if they changed")
        sub.add_parser("rotate-encryption", help="Re-encrypt provider keys with the first GATEWAY_ENCRYPTION_KEY")
        p = sub.add_parser(
            "consume-logs",
            help="Write the call log stream (REDIS_URL) into the database until SIGTERM; gateways run one each "
            "unless GATEWAY_LOG_CONSUMER=0",
        )
        p.add_argument("--name", default=None, help="consumer name in the group (default: host-pid)")

        p = sub.add_parser("stripe-sync", help="Push finalized invoices that Stripe has not got yet")
        p.add_argument("--tenant", default=None)

        # Invoices: `invoice` and `finalize-invoices` (billing.invoicing.commands).
        from billing.invoicing.commands import add_arguments as add_invoice_arguments

        add_invoice_arguments(sub)

    def handle(self, *args, **options) -> None:
        handler = getattr(self, "cmd_" + options["subcommand"].replace("-", "_"))
        try:
            handler(options)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None

    def _tenant(self, slug: str) -> Tenant:
        try:
            return Tenant.objects.get(slug=slug)
        except Tenant.DoesNotExist:
            raise CommandError(f"no tenant with slug {slug!r}") from None

    def cmd_apply(self, options: dict) -> None:
        from tenants.config import ConfigError, apply_config

        path = options["file"]
        try:
            text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        try:
            tenant, changes = apply_config(text, actor=Actor.cli())
        except ConfigError as exc:
            raise CommandError(f"{path}: {exc}") from None
        for line in changes:
            self.stdout.write(line)
        if not changes:
            self.stdout.write(f"tenant {tenant.slug}: no changes")

    def cmd_export(self, options: dict) -> None:
        from tenants.config import export_config

        self.stdout.write(export_config(self._tenant(options["tenant"])), ending="")

    def cmd_mint_key(self, options: dict) -> None:
        from tenants.services import virtual_key_create

        tenant = self._tenant(options["tenant"])
        expires_at: datetime | None = None
        if options["expires"]:
            expires_at = parse_datetime(options["expires"])
            if expires_at is None:
                raise CommandError(f"--expires {options['expires']!r} is not an ISO 8601 date-time")
        models = [m for m in options["models"].split(",") if m.strip()]
        budget = None
        if options["budget"] is not None:
            from decimal import Decimal, InvalidOperation

            try:
                budget = Decimal(options["budget"])
            except InvalidOperation:
                raise CommandError(f"--budget {options['budget']!r} is not a number of USD") from None
        from billing.services import limit_error, usd_error

        if budget is not None:
            problem = usd_error(budget)
            if problem:
                raise CommandError(f"--budget {problem}")
        # Checked before anything is written: the column's range, not a database error, says no.
        for flag in ("rpm", "tpm", "max_parallel"):
            problem = limit_error(options[flag]) if options[flag] is not None else None
            if problem:
                raise CommandError(f"--{flag.replace('_', '-')} {problem}")
        from django.db import transaction

        from billing.models import LimitScope
        from billing.services import budget_upsert, rate_limit_set

        mcp = None
        if options.get("mcp"):
            import json

            try:
                mcp = json.loads(options["mcp"])
            except json.JSONDecodeError as exc:
                raise CommandError(f'--mcp is JSON, e.g. \'{{"docs": "*"}}\': {exc}') from None
        with transaction.atomic():
            key, secret = virtual_key_create(
                tenant,
                name=options["name"],
                models=models,
                expires_at=expires_at,
                mcp=mcp,
                admin=options.get("admin", False),
                actor=Actor.cli(),
            )
            if options["rpm"] or options["tpm"] or options["max_parallel"]:
                rate_limit_set(
                    tenant,
                    scope=LimitScope.KEY,
                    ref=str(key.id),
                    rpm=options["rpm"],
                    tpm=options["tpm"],
                    max_parallel=options["max_parallel"],
                    actor=Actor.cli(),
                )
            if budget is not None:
                budget_upsert(
                    tenant,
                    scope=f"key:{key.name}",
                    limit_usd=budget,
                    period=options["budget_period"],
                    mode="hard",
                    actor=Actor.cli(),
                )
        self.stdout.write(secret)

    def cmd_spend(self, options: dict) -> None:
        import json

        from billing.selectors import spend_summary

        tenant = self._tenant(options["tenant"])
        dates = {name: day for name in ("since", "until") if (day := self._day(options, name)) is not None}
        self.stdout.write(json.dumps(spend_summary(tenant, **dates)))

    def cmd_export_logs(self, options: dict) -> None:
        from observability.exports import export_logs

        tenant = self._tenant(options["tenant"])
        bounds = {}
        for name in ("since", "until"):
            bounds[name] = None
            if options[name]:
                bounds[name] = parse_datetime(options[name]) or _parse_day(options[name])
                if bounds[name] is None:
                    raise CommandError(f"--{name} {options[name]!r} is not an ISO 8601 date or date-time")
        for text in export_logs(tenant, since=bounds["since"], until=bounds["until"], fmt=options["format"]):
            self.stdout.write(text, ending="")

    def _day(self, options: dict, name: str) -> date | None:
        from django.utils.dateparse import parse_date

        raw = options.get(name)
        if not raw:
            return None
        try:
            day = parse_date(raw) if len(raw) == 10 else None
        except ValueError:
            day = None
        if day is None:
            raise CommandError(f"--{name} {raw!r} is not a date (YYYY-MM-DD)")
        return day

    def cmd_reconcile(self, options: dict) -> None:
        from billing.selectors import reconcile_days

        since, until = self._day(options, "since"), self._day(options, "until")
        tenants = [self._tenant(options["tenant"])] if options["tenant"] else list(Tenant.objects.order_by("slug"))
        differences = 0

        def report(d) -> None:
            self.stderr.write(f"{d.tenant} {d.day} {d.what}: ledger {d.ledger} != call logs {d.call_logs}")

        for tenant in tenants:
            r = reconcile_days(tenant, since=since, until=until, on_difference=report)
            differences += r.differences
            detail = f"{r.days_checked} day(s) against the call logs"
            if r.days_against_rollups:
                detail += f", {r.days_against_rollups} past retention against the day rollups"
            if r.days_skipped:
                detail += f", {r.days_skipped} past retention not checked (the tenant's days are not UTC days)"
            if options.get("verbosity", 1) >= 2:
                self.stdout.write(f"{tenant.slug}: {detail}")
        if differences:
            raise CommandError(f"{differences} difference(s) between the spend ledger and the call logs")
        self.stdout.write("ledger matches call logs")
        from billing.invoicing.commands import reconcile_invoices

        for tenant in tenants if options["tenant"] else [None]:
            invoice_diffs = reconcile_invoices(self, tenant)
            if invoice_diffs:
                raise CommandError(f"{invoice_diffs} difference(s) between the spend ledger and the invoices")

    def cmd_rebuild_rollups(self, options: dict) -> None:
        from observability.rollups import rebuild_rollups

        tenant = self._tenant(options["tenant"])
        since = self._day(options, "since")
        until = self._day(options, "until") or datetime.now(UTC).date()
        if since is None or since >= until:
            raise CommandError("--since must be a day before --until (default: today)")
        rows = rebuild_rollups(tenant, since=since, until=until)
        self.stdout.write(f"{tenant.slug}: rollups of {since} to {until} (exclusive) rebuilt from {rows} call log(s)")

    def cmd_invoice(self, options: dict) -> None:
        from billing.invoicing.commands import cmd_invoice

        cmd_invoice(self, options)

    def cmd_finalize_invoices(self, options: dict) -> None:
        from billing.invoicing.commands import cmd_finalize_invoices

        cmd_finalize_invoices(self, options)

    def cmd_stripe_sync(self, options: dict) -> None:
        from billing.stripe.sync import enabled, sync

        tenant = self._tenant(options["tenant"]) if options["tenant"] else None
        if not enabled():
            raise CommandError("Stripe is off: set STRIPE_API_KEY")
        # The operator asks now: invoices waiting out a backoff are tried too.
        result = sync(tenant, force=True)
        for label in result.pushed:
            self.stdout.write(f"{label}: pushed to Stripe")
        for label in result.voided:
            self.stdout.write(f"{label}: voided in Stripe")
        for label, error in result.failed:
            self.stderr.write(f"{label}: {error}")
        if result.failed:
            raise CommandError(f"{len(result.failed)} invoice(s) not pushed; they are retried with backoff")
        if not result.pushed and not result.voided:
            self.stdout.write("nothing to push")

    def cmd_revoke_key(self, options: dict) -> None:
        from tenants.models import VirtualKey
        from tenants.services import virtual_key_revoke

        tenant = self._tenant(options["tenant"])
        keys = list(VirtualKey.objects.filter(tenant=tenant, name=options["name"], revoked=False))
        if not keys:
            raise CommandError(f"no active key named {options['name']!r} in {tenant.slug}")
        for key in keys:
            virtual_key_revoke(tenant, key=key, actor=Actor.cli())
            self.stdout.write(f"revoked {key.name} ({key.prefix}…)")

    def cmd_add_member(self, options: dict) -> None:
        from tenants.services import member_add

        tenant = self._tenant(options["tenant"])
        membership, changes = member_add(
            tenant, email=options["email"], role=options["role"], password=options["password"], actor=Actor.cli()
        )
        for line in changes or [f"{membership.user.email} is already {membership.role} in {tenant.slug}: no changes"]:
            self.stdout.write(line)

    def cmd_mint_token(self, options: dict) -> None:
        from tenants.services import management_token_create

        tenant = self._tenant(options["tenant"])
        _token, secret = management_token_create(tenant, name=options["name"], role=options["role"], actor=Actor.cli())
        self.stdout.write(secret)

    def cmd_seed_demo(self, options: dict) -> None:
        from routing.demo import seed_demo

        for line in seed_demo():
            self.stdout.write(line)

    def cmd_quickstart(self, options: dict) -> None:
        from django.conf import settings

        from gateway_project.common.env import default_public_url
        from routing.demo import DEMO_EMAIL, demo_key_secret, demo_password
        from tenants.models import VirtualKey, hash_secret

        # The address this machine reaches the server on (a wildcard HOST is shown as loopback).
        base = default_public_url(settings.HOST, settings.PORT)
        key = demo_key_secret()
        if VirtualKey.objects.filter(key_hash=hash_secret(key), revoked=True).exists():
            key_text = """  The demo key was revoked, and stays revoked. Mint a new one with:
    GATEWAY_DEV=1 .venv/bin/python manage.py gateway mint-key --tenant demo --name app
  and use it in place of $KEY below."""
            key = "$KEY"
        else:
            key_text = f"""  Demo virtual key (tenant "demo", models served by the built-in mock provider):
    {key}"""
        self.stdout.write(
            f"""
  LLM gateway is starting on {base}

{key_text}

  Try it:
    curl {base}/v1/chat/completions \\
      -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
      -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  Console: {base}/   login {DEMO_EMAIL} / {demo_password()} (unless you changed it)
"""
        )

    def cmd_bootstrap(self, options: dict) -> None:
        # One Django start does everything `make run` needs before the server: restarts stay quick.
        from django.conf import settings

        from gateway_project.startup import check_port_free, collectstatic_if_needed, migrate_if_needed
        from routing.demo import seed_demo

        check_port_free(settings.HOST, settings.PORT)
        if migrate_if_needed():
            self.stderr.write("  applied database migrations")
        collectstatic_if_needed()
        seed_demo()
        self.cmd_quickstart(options)

    def cmd_preflight(self, options: dict) -> None:
        from django.conf import settings

        from gateway_project.startup import check_port_free, collectstatic_if_needed

        if not options["static_only"]:
            check_port_free(settings.HOST, settings.PORT)
        collectstatic_if_needed()

    def cmd_consume_logs(self, options: dict) -> None:
        import asyncio

        from observability import stream

        if not stream.enabled():
            raise CommandError("the call log stream is off: set REDIS_URL (and leave GATEWAY_LOG_STREAM on)")
        asyncio.run(stream.consume_forever(name=options["name"]))

    def cmd_rotate_encryption(self, options: dict) -> None:
        from routing.services import rotate_encryption

        self.stdout.write(f"re-encrypted {rotate_encryption()} provider keys")
