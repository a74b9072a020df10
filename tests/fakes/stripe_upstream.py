"""A fake Stripe API: a real HTTP server on loopback speaking Stripe's v1 wire format.

Written from Stripe's API reference (docs.stripe.com/api) and the request shapes of the official
`stripe` Python library: form-encoded POST bodies (`metadata[gateway_invoice]=...`), Bearer auth with
the secret key, JSON objects with `id` and `object`, errors as `{"error": {"type", "code", "message",
"param"}}` with Stripe's status codes.

Endpoints: POST /v1/customers, POST /v1/invoices, GET /v1/invoices/{id}, POST /v1/invoices/{id}/finalize,
POST /v1/invoices/{id}/void (open or uncollectible invoices only), DELETE /v1/invoices/{id} (drafts only),
POST /v1/invoiceitems, GET /v1/invoiceitems?invoice=..., POST /v1/billing_portal/sessions.

Idempotency, as Stripe documents it for v1: the first response to an `Idempotency-Key` is stored and a
retry with the same key gets it back (with `Idempotent-Replayed: true`); the same key with another
endpoint or other parameters is a 400 `idempotency_error`. On top of that the fake is strict where real
Stripe would silently bill twice: a POST identical (endpoint and parameters) to an earlier one but
without that request's `Idempotency-Key` is refused with a 409 `idempotency_error` and recorded in
`duplicates`. Billing portal sessions are exempt: opening the portal twice creates two harmless sessions.

`fail_next(n, status=500)` (or 429) answers the next n matching POSTs with Stripe's error JSON before
anything is executed, so nothing is stored under their keys and a retry can succeed. `slow_next(n, seconds)`
holds the next n requests that long before answering (a slow Stripe).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.fakes.loopback import LoopbackServer

API_KEY = "sk_test_fake_stripe_key_0123456789"


@dataclass
class Call:
    method: str
    path: str
    idempotency_key: str | None
    params: dict[str, Any]
    status: int = 0


def unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """`metadata[a]=1&lines[0][x]=2` -> {"metadata": {"a": "1"}, "lines": {"0": {"x": "2"}}}."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


@dataclass
class FakeStripe(LoopbackServer):
    host: str = "127.0.0.1"
    port: int = 0
    calls: list[Call] = field(default_factory=list)
    duplicates: list[Call] = field(default_factory=list)
    customers: dict[str, dict] = field(default_factory=dict)
    invoices: dict[str, dict] = field(default_factory=dict)
    invoiceitems: dict[str, dict] = field(default_factory=dict)
    portal_sessions: dict[str, dict] = field(default_factory=dict)
    # key -> (method, path, params, status, body)
    _idempotent: dict[str, tuple[str, str, dict, int, dict]] = field(default_factory=dict)
    # (method, path, canonical params) -> key of the first such POST
    _seen: dict[tuple[str, str, str], str | None] = field(default_factory=dict)
    _failures: list[tuple[int, str | None]] = field(default_factory=list)
    _delays: list[float] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> FakeStripe:
        app = web.Application()
        app.router.add_post("/v1/customers", self.create_customer)
        app.router.add_post("/v1/invoices", self.create_invoice)
        app.router.add_get("/v1/invoices/{id}", self.get_invoice)
        app.router.add_post("/v1/invoices/{id}/finalize", self.finalize_invoice)
        app.router.add_post("/v1/invoices/{id}/void", self.void_invoice)
        app.router.add_delete("/v1/invoices/{id}", self.delete_invoice)
        app.router.add_post("/v1/invoiceitems", self.create_invoiceitem)
        app.router.add_get("/v1/invoiceitems", self.list_invoiceitems)
        app.router.add_post("/v1/billing_portal/sessions", self.create_portal_session)
        self.serve(app, "fake-stripe")
        return self

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        with self._lock:
            for store in (self.calls, self.duplicates, self._failures, self._delays):
                store.clear()
            for d in (self.customers, self.invoices, self.invoiceitems, self.portal_sessions, self._idempotent):
                d.clear()
            self._seen.clear()

    def forget_keys(self) -> None:
        """What Stripe does to idempotency keys after 24 hours. Identical repeats stay flagged: after
        that, real Stripe would execute them again."""
        with self._lock:
            self._idempotent.clear()

    def fail_next(self, n: int, status: int = 500, path: str | None = None) -> None:
        """The next n POSTs (to paths containing `path`, if given) fail with this status."""
        with self._lock:
            self._failures.extend([(status, path)] * n)

    def slow_next(self, n: int, seconds: float) -> None:
        """The next n requests (any method) wait this long before they are handled."""
        with self._lock:
            self._delays.extend([seconds] * n)

    def posts(self, path_part: str = "") -> list[Call]:
        return [c for c in self.calls if c.method == "POST" and path_part in c.path]

    # --- plumbing -------------------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):06d}"

    @staticmethod
    def _error(status: int, type_: str, message: str, code: str | None = None, param: str | None = None):
        body = {"error": {"type": type_, "message": message}}
        if code:
            body["error"]["code"] = code
        if param:
            body["error"]["param"] = param
        headers = {"Request-Id": f"req_fake{int(time.time() * 1000)}"}
        if status >= 500 or status == 429:
            # Stripe tells the client library whether a retry is safe.
            headers["Stripe-Should-Retry"] = "true"
        return web.json_response(body, status=status, headers=headers)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.method == "GET":
            return unflatten(list(request.query.items()))
        raw = (await request.read()).decode()
        return unflatten(parse_qsl(raw, keep_blank_values=True))

    async def _handle(self, request: web.Request, execute) -> web.Response:
        """Authentication, recording, injected failures and idempotency around one endpoint."""
        with self._lock:
            delay = self._delays.pop(0) if self._delays else 0.0
        if delay:
            await asyncio.sleep(delay)
        params = await self._params(request)
        key = request.headers.get("Idempotency-Key")
        call = Call(request.method, request.path, key, params)
        self.calls.append(call)
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {API_KEY}":
            call.status = 401
            # Stripe quotes the key it got, masked in the middle: callers must not store even that.
            got = auth.removeprefix("Bearer ")
            masked = got[:8] + "*" * max(len(got) - 12, 0) + got[-4:] if len(got) > 12 else "****"
            return self._error(401, "invalid_request_error", f"Invalid API Key provided: {masked}", "api_key_invalid")
        if request.method != "POST":
            # GET and DELETE: idempotent by nature, Stripe takes no Idempotency-Key for them.
            status, body = execute(params)
            call.status = status
            return web.json_response(body, status=status)
        with self._lock:
            for i, (status, part) in enumerate(self._failures):
                if part is None or part in request.path:
                    del self._failures[i]
                    call.status = status
                    if status == 429:
                        return self._error(429, "invalid_request_error", "Too many requests.", "rate_limit")
                    return self._error(status, "api_error", "Something went wrong on Stripe's end (fake).")
            if key is not None and key in self._idempotent:
                method, path, first_params, status, body = self._idempotent[key]
                if (method, path, first_params) != (request.method, request.path, params):
                    call.status = 400
                    return self._error(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same parameters they were first "
                        f"used with. Try using a key other than '{key}' if you meant to execute a different request.",
                    )
                call.status = status
                return web.json_response(
                    body, status=status, headers={"Idempotent-Replayed": "true", "Original-Request": "req_fake"}
                )
            fingerprint = (request.method, request.path, json.dumps(params, sort_keys=True))
            if fingerprint in self._seen and not request.path.startswith("/v1/billing_portal/"):
                # Real Stripe would execute this again and bill twice: the fake refuses, loudly.
                call.status = 409
                self.duplicates.append(call)
                return self._error(
                    409,
                    "idempotency_error",
                    f"Fake Stripe: this POST repeats an earlier identical one (Idempotency-Key "
                    f"{self._seen[fingerprint]!r}) with key {key!r}; real Stripe would have done it twice.",
                )
            status, body = execute(params)
            call.status = status
            self._seen.setdefault(fingerprint, key)
            if key is not None:
                self._idempotent[key] = (request.method, request.path, params, status, body)
        return web.json_response(body, status=status)

    # --- endpoints ------------------------------------------------------------------------------------

    async def create_customer(self, request: web.Request) -> web.Response:
        def execute(params: dict) -> tuple[int, dict]:
            customer = {
                "id": self._new_id("cus"),
                "object": "customer",
                "created": int(time.time()),
                "name": params.get("name"),
                "email": params.get("email"),
                "metadata": params.get("metadata", {}),
                "livemode": False,
            }
            self.customers[customer["id"]] = customer
            return 200, customer

        return await self._handle(request, execute)

    async def create_invoice(self, request: web.Request) -> web.Response:
        def execute(params: dict) -> tuple[int, dict]:
            if params.get("customer") not in self.customers:
                return 400, _invalid("customer", f"No such customer: '{params.get('customer')}'")
            invoice = {
                "id": self._new_id("in"),
                "object": "invoice",
                "customer": params["customer"],
                "currency": params.get("currency", "usd"),
                "status": "draft",
                "auto_advance": params.get("auto_advance") == "true",
                "collection_method": params.get("collection_method", "charge_automatically"),
                "description": params.get("description"),
                "metadata": params.get("metadata", {}),
                "amount_due": 0,
                "total": 0,
                "number": None,
                "livemode": False,
            }
            self.invoices[invoice["id"]] = invoice
            return 200, invoice

        return await self._handle(request, execute)

    async def get_invoice(self, request: web.Request) -> web.Response:
        invoice_id = request.match_info["id"]

        def execute(params: dict) -> tuple[int, dict]:
            if invoice_id not in self.invoices:
                return 404, _invalid("id", f"No such invoice: '{invoice_id}'", code="resource_missing")
            return 200, self.invoices[invoice_id]

        return await self._handle(request, execute)

    async def finalize_invoice(self, request: web.Request) -> web.Response:
        invoice_id = request.match_info["id"]

        def execute(params: dict) -> tuple[int, dict]:
            invoice = self.invoices.get(invoice_id)
            if invoice is None:
                return 404, _invalid("invoice", f"No such invoice: '{invoice_id}'", code="resource_missing")
            if invoice["status"] != "draft":
                return 400, _invalid(None, f"Invoice {invoice_id} is already finalized.", code="invoice_not_editable")
            invoice["status"] = "open"
            invoice["number"] = f"FAKE-{len([i for i in self.invoices.values() if i['number']]) + 1:04d}"
            if "auto_advance" in params:
                invoice["auto_advance"] = params["auto_advance"] == "true"
            return 200, invoice

        return await self._handle(request, execute)

    async def void_invoice(self, request: web.Request) -> web.Response:
        invoice_id = request.match_info["id"]

        def execute(params: dict) -> tuple[int, dict]:
            invoice = self.invoices.get(invoice_id)
            if invoice is None:
                return 404, _invalid("invoice", f"No such invoice: '{invoice_id}'", code="resource_missing")
            if invoice["status"] not in ("open", "uncollectible"):
                return 400, _invalid(
                    None,
                    f"You can only void an open or uncollectible invoice ({invoice['status']}).",
                    code="invoice_not_editable",
                )
            invoice["status"] = "void"
            return 200, invoice

        return await self._handle(request, execute)

    async def delete_invoice(self, request: web.Request) -> web.Response:
        invoice_id = request.match_info["id"]

        def execute(params: dict) -> tuple[int, dict]:
            invoice = self.invoices.get(invoice_id)
            if invoice is None:
                return 404, _invalid("invoice", f"No such invoice: '{invoice_id}'", code="resource_missing")
            if invoice["status"] != "draft":
                return 400, _invalid(None, "You can only delete draft invoices.", code="invoice_not_editable")
            del self.invoices[invoice_id]
            for item_id in [i for i, item in self.invoiceitems.items() if item["invoice"] == invoice_id]:
                del self.invoiceitems[item_id]
            return 200, {"id": invoice_id, "object": "invoice", "deleted": True}

        return await self._handle(request, execute)

    async def create_invoiceitem(self, request: web.Request) -> web.Response:
        def execute(params: dict) -> tuple[int, dict]:
            if params.get("customer") not in self.customers:
                return 400, _invalid("customer", f"No such customer: '{params.get('customer')}'")
            invoice = self.invoices.get(params.get("invoice", ""))
            if "invoice" in params and invoice is None:
                return 400, _invalid("invoice", f"No such invoice: '{params['invoice']}'")
            if invoice is not None and invoice["status"] != "draft":
                return 400, _invalid("invoice", "You can only add invoice items to draft invoices.")
            try:
                amount = int(params["amount"])
            except (KeyError, ValueError):
                return 400, _invalid("amount", "Invalid integer: amount")
            item = {
                "id": self._new_id("ii"),
                "object": "invoiceitem",
                "customer": params["customer"],
                "invoice": params.get("invoice"),
                "amount": amount,
                "currency": params.get("currency"),
                "description": params.get("description"),
                "metadata": params.get("metadata", {}),
                "livemode": False,
            }
            self.invoiceitems[item["id"]] = item
            if invoice is not None:
                invoice["total"] += amount
                invoice["amount_due"] = max(invoice["total"], 0)
            return 200, item

        return await self._handle(request, execute)

    async def list_invoiceitems(self, request: web.Request) -> web.Response:
        def execute(params: dict) -> tuple[int, dict]:
            items = [i for i in self.invoiceitems.values() if i["invoice"] == params.get("invoice", i["invoice"])]
            return 200, {"object": "list", "url": "/v1/invoiceitems", "has_more": False, "data": items}

        return await self._handle(request, execute)

    async def create_portal_session(self, request: web.Request) -> web.Response:
        def execute(params: dict) -> tuple[int, dict]:
            if params.get("customer") not in self.customers:
                return 400, _invalid("customer", f"No such customer: '{params.get('customer')}'")
            session_id = self._new_id("bps")
            session = {
                "id": session_id,
                "object": "billing_portal.session",
                "customer": params["customer"],
                "return_url": params.get("return_url"),
                "url": f"https://billing.stripe.test/p/session/{session_id}",
                "livemode": False,
            }
            self.portal_sessions[session_id] = session
            return 200, session

        return await self._handle(request, execute)


def _invalid(param: str | None, message: str, code: str = "resource_missing") -> dict:
    error: dict[str, Any] = {"type": "invalid_request_error", "code": code, "message": message}
    if param:
        error["param"] = param
    return {"error": error}
