"""Management REST API (/api/v1/): keys, members, invitations and the audit log.

Callers authenticate with a management token (`Authorization: Bearer gwm-...`) that belongs to one
tenant and carries a role; every endpoint works inside that tenant only, with the same permission
rules as the console (tenants.permissions). One APIView per operation, each with its own input and
output serializers; `by_method` lets several operations share a URL (GET and POST on /keys/).
Errors always look like {"error": {"code": ..., "message": ..., "fields": {...}?}}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.urls import Resolver404, resolve
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from tenants.models import KEY_PREFIX, ROLE_RANK, ManagementToken, Membership, Role
from tenants.permissions import (
    AUDIT_VIEW,
    CONFIG_WRITE,
    KEYS_WRITE,
    MEMBERS_MANAGE,
    VIEW,
    TenantAccess,
    access_invitation,
    access_key,
    access_membership,
    token_access,
    visible_keys,
)
from tenants.selectors import audit_entries_for, management_token_by_secret, members_for, pending_invitations_for
from tenants.services import (
    invitation_create,
    invitation_revoke,
    membership_remove,
    membership_set_role,
    virtual_key_create,
    virtual_key_revoke,
    virtual_key_rotate,
    virtual_key_update,
)
from tenants.strict import StrictSerializer, refuse_any

# A token's last_used_at is written at most this often, so busy automation does not write on every call.
LAST_USED_RESOLUTION_SECONDS = 60


# --- Authentication, permission, errors ------------------------------------------------------------


class ManagementTokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, ManagementToken] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise exceptions.AuthenticationFailed("Send the management token as `Authorization: Bearer <token>`.")
        if secret.startswith(KEY_PREFIX):
            raise exceptions.AuthenticationFailed(
                "That is a virtual key for the proxy (/v1/). The management API needs a management token: "
                "mint one in the console under API tokens, or with `gateway mint-token`."
            )
        token = management_token_by_secret(secret)
        if token is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked management token.")
        if token.created_by_id is not None:
            # A token acts for the person who minted it: it stops when they leave the tenant, and it
            # never carries more than their current role (a demoted admin's token is demoted too).
            role = (
                Membership.objects.filter(tenant_id=token.tenant_id, user_id=token.created_by_id)
                .values_list("role", flat=True)
                .first()
            )
            if role is None:
                raise exceptions.AuthenticationFailed(
                    "This management token's owner is no longer a member of the tenant; mint a new one."
                )
            if ROLE_RANK.get(role, -1) < ROLE_RANK.get(token.role, -1):
                token.role = role
        now = timezone.now()
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > LAST_USED_RESOLUTION_SECONDS:
            ManagementToken.objects.filter(id=token.id).update(last_used_at=now)
        return (token.created_by or AnonymousUser(), token)

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) when the token is missing or wrong.
        return 'Bearer realm="management-api"'


class ManagementTokenScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.apis.ManagementTokenAuthentication"
    name = "managementToken"

    def get_security_definition(self, auto_schema: Any) -> dict:
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Bearer")


class GatewayAutoSchema(AutoSchema):
    """Names nested serializers after their view ("KeyCreateApi.InputSerializer" -> "KeyCreateInput"),
    since every view calls its own InputSerializer and OutputSerializer."""

    def get_serializer_name(self, serializer: Any, direction: str) -> str:
        cls = type(serializer)
        owner, _, _ = cls.__qualname__.rpartition(".")
        if owner.endswith("Api"):
            return owner.removesuffix("Api") + cls.__name__.removesuffix("Serializer")
        return super().get_serializer_name(serializer, direction)


class HasManagementToken(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        if not isinstance(request.auth, ManagementToken):
            raise exceptions.NotAuthenticated(
                "Authentication required: send a management token as `Authorization: Bearer <token>`."
            )
        return True


def _first_message(fields: Any) -> str:
    if isinstance(fields, dict):
        for name, value in fields.items():
            inner = _first_message(value)
            return inner if name == "non_field_errors" else f"{name}: {inner}"
    if isinstance(fields, list) and fields:
        return _first_message(fields[0])
    return str(fields)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, plus Django's exceptions from services and access helpers, in one JSON shape."""
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(detail=as_serializer_error(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    assert isinstance(exc, exceptions.APIException)
    error: dict[str, Any] = {"code": exc.default_code, "message": ""}
    if isinstance(exc, exceptions.ValidationError):
        error["message"] = _first_message(response.data)
        error["fields"] = response.data if isinstance(response.data, dict) else {"non_field_errors": response.data}
    else:
        error["message"] = str(exc.detail)
    response.data = {"error": error}
    return response


class TokenApi(APIView):
    """Base for every management endpoint: token auth, then the role check for `required_perm`."""

    authentication_classes = [ManagementTokenAuthentication]
    permission_classes = [HasManagementToken]
    required_perm: str = VIEW
    # True for an operation that takes nothing but its path: any query parameter (GET) or body field
    # (other methods) is then a 400 naming it, as a StrictSerializer does for the operations that take
    # input, instead of being ignored while the client believes it was applied.
    takes_no_input: bool = False
    access: TenantAccess

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        self.access = token_access(request, request.auth, self.required_perm)
        if self.takes_no_input:
            refuse_any(request.query_params if request.method in ("GET", "HEAD") else self._body_if_json(request))

    def _body_if_json(self, request: Request) -> Any:
        # A body that is not JSON (a bare `curl -X POST`, a form) was never read here: still accepted.
        try:
            return request.data
        except exceptions.UnsupportedMediaType:
            return None


def by_method(**views: type[APIView]) -> Callable[..., HttpResponse]:
    """Serve one URL with a separate APIView per HTTP method: by_method(get=KeyListApi, post=KeyCreateApi)."""
    handlers = {method.upper(): view.as_view() for method, view in views.items()}
    if "GET" in handlers:
        handlers.setdefault("HEAD", handlers["GET"])
    allowed = ", ".join(sorted(handlers))

    def dispatch(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        handler = handlers.get(request.method or "")
        if handler is None:
            body = {
                "error": {
                    "code": "method_not_allowed",
                    "message": f"{request.method} is not allowed here; use {allowed}.",
                }
            }
            return JsonResponse(body, status=405, headers={"Allow": allowed})
        return handler(request, *args, **kwargs)

    # The OpenAPI generator reads `cls` to find the operations; a class combining the views has them all.
    dispatch.cls = type("".join(v.__name__ for v in views.values()), tuple(views.values()), {})  # type: ignore[attr-defined]
    dispatch.initkwargs = {}  # type: ignore[attr-defined]
    dispatch.csrf_exempt = True  # type: ignore[attr-defined]
    return dispatch


@csrf_exempt  # API clients send no CSRF token; without this a POST would get the HTML CSRF page instead
def api_not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any /api/ path no endpoint matches: the API's JSON error, never Django's HTML 404 page."""
    path = request.path
    if not path.endswith("/"):
        # CommonMiddleware's APPEND_SLASH redirect never happens here (this view matches first); point
        # to the endpoint with the slash, with a 308 so a POST stays a POST.
        try:
            match = resolve(path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            query = request.META.get("QUERY_STRING", "")
            return HttpResponsePermanentRedirect(path + "/" + (f"?{query}" if query else ""), preserve_request=True)
    body = {"error": {"code": "not_found", "message": f"No API endpoint at {path}. See /api/docs/ for the list."}}
    return JsonResponse(body, status=404)


def no_store(response: Response) -> Response:
    """For responses that carry a secret shown once: no browser, proxy or client cache may keep it."""
    add_never_cache_headers(response)
    return response


# --- Virtual keys ----------------------------------------------------------------------------------


ADMIN_HELP = (
    "An admin key acts on every call of its tenant (scores calls made with other keys through /v1/feedback); "
    "other keys only on their own calls."
)
KEY_GUARDRAILS_INPUT_HELP = (
    "The key's own checks (see /api/v1/policies/guardrails/); [] runs none; null inherits the tenant's. Admins only."
)
MCP_HELP = (
    'The MCP servers and tools the key may use at /mcp: {"github": ["search_issues", "get_issue"], "docs": "*"} '
    '(or a list of "server/tool" and "server/*"); null: no MCP access.'
)


@dataclass
class KeyPolicyHooks:
    """A key's own PII policy (VirtualKey.pii_policy) and guardrails (VirtualKey.guardrails) are checked and
    stored by routing.policies, which fills these in from RoutingConfig.ready(): tenants knows the columns,
    not the grammars."""

    clean: Callable[[Any], Any] | None = None
    store: Callable[..., bool] | None = None
    # The stored form as the API shows it, when that is not the stored form itself.
    export: Callable[[Any], Any] | None = None


KEY_PII = KeyPolicyHooks()
KEY_GUARDRAILS = KeyPolicyHooks()


class KeyGuardrailsField(serializers.JSONField):
    """Shows a key's checks as YAML writes them, so what a GET returns a PATCH takes back (stored rows are
    normalized, and not all of them read back: a denied_topics row keeps its topics as `words`)."""

    def to_representation(self, value: Any) -> Any:
        if value and KEY_GUARDRAILS.export is not None:
            value = KEY_GUARDRAILS.export(value)
        return super().to_representation(value)


class KeyOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="The first characters of the secret, to recognise the key.")
    models = serializers.ListField(
        source="allowed_models", child=serializers.CharField(), help_text="Empty: every model of the tenant."
    )
    expires_at = serializers.DateTimeField(allow_null=True)
    metadata = serializers.DictField()
    active = serializers.BooleanField(source="is_active")
    revoked = serializers.BooleanField()
    revoked_at = serializers.DateTimeField(allow_null=True)
    created_by = serializers.EmailField(source="created_by.email", allow_null=True, default=None)
    created_at = serializers.DateTimeField()
    pii = serializers.JSONField(
        source="pii_policy",
        allow_null=True,
        help_text="The key's own PII policy (the `pii:` section as JSON), replacing the tenant's for its calls; "
        "null: the tenant's applies.",
    )
    guardrails = KeyGuardrailsField(
        allow_null=True,
        help_text="The key's own checks (the `guardrails:` section as JSON), replacing the tenant's for its calls; "
        "[]: it runs none; null: the tenant's apply.",
    )
    mcp = serializers.JSONField(allow_null=True, help_text=MCP_HELP)
    admin = serializers.BooleanField(help_text=ADMIN_HELP)


KEY_PII_INPUT_HELP = "The key's own PII policy (see /api/v1/policies/pii/); null inherits the tenant's. Admins only."


def _check_key_mcp(access: TenantAccess, data: dict) -> None:
    """MCP access lets a key run the tenant's tools (a deploy, a delete): granting it is an admin's call,
    as the tenant's servers are."""
    if "mcp" not in data:
        return
    if not access.can(CONFIG_WRITE):
        raise DjangoPermissionDenied("Only an owner or admin may set a key's MCP access.")


def _check_key_admin(access: TenantAccess, data: dict) -> None:
    """An admin key scores the calls of every key of the tenant: granting it is an admin's call, as MCP
    access is. Taking it away, or saying false, is anyone's who may edit the key."""
    if data.get("admin") and not access.can(CONFIG_WRITE):
        raise DjangoPermissionDenied("Only an owner or admin may make a key an admin key.")


def _check_key_policies(access: TenantAccess, data: dict) -> None:
    """A key's own PII policy or guardrails can switch the tenant's protection off (`[]` runs no checks), so
    only admins may set them; they are checked before anything is written."""
    for field, hooks, what in (("pii", KEY_PII, "PII policy"), ("guardrails", KEY_GUARDRAILS, "guardrails")):
        if field not in data:
            continue
        if not access.can(CONFIG_WRITE):
            raise DjangoPermissionDenied(f"Only an owner or admin may set a key's {what}.")
        if data[field] is not None:
            assert hooks.clean is not None
            hooks.clean(data[field])


class KeyListApi(TokenApi):
    takes_no_input = True

    class OutputSerializer(KeyOutputSerializer):
        pass

    @extend_schema(responses=OutputSerializer(many=True), summary="List virtual keys (never their secrets)")
    def get(self, request: Request) -> Response:
        keys = visible_keys(self.access).select_related("created_by").order_by("-created_at")
        return Response(self.OutputSerializer(keys, many=True).data)


class KeyCreateApi(TokenApi):
    required_perm = KEYS_WRITE

    class InputSerializer(StrictSerializer):
        name = serializers.CharField(max_length=200)
        models = serializers.ListField(child=serializers.CharField(max_length=200), required=False, default=list)
        expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
        metadata = serializers.DictField(required=False, default=dict)
        pii = serializers.JSONField(required=False, allow_null=True, help_text=KEY_PII_INPUT_HELP)
        guardrails = serializers.JSONField(required=False, allow_null=True, help_text=KEY_GUARDRAILS_INPUT_HELP)
        mcp = serializers.JSONField(required=False, allow_null=True, help_text=MCP_HELP)
        admin = serializers.BooleanField(required=False, help_text=ADMIN_HELP + " Only owners and admins may set true.")

    class OutputSerializer(KeyOutputSerializer):
        secret = serializers.CharField(help_text="Shown once, in this response only.")

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer}, summary="Create a virtual key")
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        _check_key_policies(self.access, data)
        _check_key_mcp(self.access, data)
        _check_key_admin(self.access, data)
        pii = data.pop("pii", None)
        guardrails = data.pop("guardrails", None)
        with transaction.atomic():
            key, secret = virtual_key_create(self.access.tenant, actor=self.access.actor, **data)
            if pii is not None:
                KEY_PII.store(self.access.tenant, key=key, policy=pii, actor=self.access.actor)
            if guardrails is not None:
                assert KEY_GUARDRAILS.store is not None
                KEY_GUARDRAILS.store(self.access.tenant, key=key, guardrails=guardrails, actor=self.access.actor)
        key.secret = secret  # type: ignore[attr-defined]
        return no_store(Response(self.OutputSerializer(key).data, status=status.HTTP_201_CREATED))


class KeyDetailApi(TokenApi):
    takes_no_input = True

    class OutputSerializer(KeyOutputSerializer):
        pass

    @extend_schema(responses=OutputSerializer, summary="Get a virtual key")
    def get(self, request: Request, key_id: int) -> Response:
        return Response(self.OutputSerializer(access_key(self.access, key_id)).data)


class KeyUpdateApi(TokenApi):
    required_perm = KEYS_WRITE

    class InputSerializer(StrictSerializer):
        name = serializers.CharField(max_length=200, required=False)
        models = serializers.ListField(child=serializers.CharField(max_length=200), required=False)
        expires_at = serializers.DateTimeField(required=False, allow_null=True)
        metadata = serializers.DictField(required=False)
        pii = serializers.JSONField(required=False, allow_null=True, help_text=KEY_PII_INPUT_HELP)
        guardrails = serializers.JSONField(required=False, allow_null=True, help_text=KEY_GUARDRAILS_INPUT_HELP)
        mcp = serializers.JSONField(required=False, allow_null=True, help_text=MCP_HELP)
        admin = serializers.BooleanField(required=False, help_text=ADMIN_HELP + " Only owners and admins may set true.")

    class OutputSerializer(KeyOutputSerializer):
        pass

    @extend_schema(
        request=InputSerializer,
        responses=OutputSerializer,
        summary="Change a key's name, models, expiry, metadata, PII policy, guardrails, MCP access or admin flag",
    )
    def patch(self, request: Request, key_id: int) -> Response:
        key = access_key(self.access, key_id, write=True)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        _check_key_policies(self.access, data)
        _check_key_mcp(self.access, data)
        _check_key_admin(self.access, data)
        with transaction.atomic():
            key = virtual_key_update(
                self.access.tenant,
                key=key,
                actor=self.access.actor,
                name=data.get("name"),
                models=data.get("models"),
                expires_at=data["expires_at"] if "expires_at" in data else "unchanged",
                metadata=data.get("metadata"),
                mcp=data["mcp"] if "mcp" in data else "unchanged",
                admin=data.get("admin"),
            )
            if "pii" in data:
                KEY_PII.store(self.access.tenant, key=key, policy=data["pii"], actor=self.access.actor)
            if "guardrails" in data:
                assert KEY_GUARDRAILS.store is not None
                KEY_GUARDRAILS.store(
                    self.access.tenant, key=key, guardrails=data["guardrails"], actor=self.access.actor
                )
        return Response(self.OutputSerializer(key).data)


class KeyRevokeApi(TokenApi):
    required_perm = KEYS_WRITE
    takes_no_input = True

    class OutputSerializer(KeyOutputSerializer):
        pass

    @extend_schema(
        request=None, responses=OutputSerializer, summary="Revoke a key; the proxy refuses it within a second"
    )
    def post(self, request: Request, key_id: int) -> Response:
        key = access_key(self.access, key_id, write=True)
        key = virtual_key_revoke(self.access.tenant, key=key, actor=self.access.actor)
        return Response(self.OutputSerializer(key).data)


class KeyRotateApi(TokenApi):
    required_perm = KEYS_WRITE
    takes_no_input = True

    class OutputSerializer(KeyOutputSerializer):
        secret = serializers.CharField(help_text="The new secret, shown once. The old one stops working now.")

    @extend_schema(request=None, responses=OutputSerializer, summary="Replace a key's secret")
    def post(self, request: Request, key_id: int) -> Response:
        key = access_key(self.access, key_id, write=True)
        key, secret = virtual_key_rotate(self.access.tenant, key=key, actor=self.access.actor)
        key.secret = secret  # type: ignore[attr-defined]
        return no_store(Response(self.OutputSerializer(key).data))


# --- Members and invitations -----------------------------------------------------------------------


class MemberOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField(source="user.email")
    role = serializers.ChoiceField(choices=Role.choices)
    created_at = serializers.DateTimeField()


class InvitationOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=Role.choices)
    expires_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()


class MemberListApi(TokenApi):
    takes_no_input = True

    class OutputSerializer(MemberOutputSerializer):
        pass

    @extend_schema(responses=OutputSerializer(many=True), summary="List members")
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(members_for(self.access.tenant), many=True).data)


class MemberInviteApi(TokenApi):
    required_perm = MEMBERS_MANAGE

    class InputSerializer(StrictSerializer):
        email = serializers.EmailField()
        role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)

    class OutputSerializer(InvitationOutputSerializer):
        pass

    @extend_schema(
        request=InputSerializer,
        responses={201: OutputSerializer},
        summary="Invite someone by email; they join when they accept",
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        invitation, _token = invitation_create(self.access.tenant, actor=self.access.actor, **serializer.validated_data)
        return Response(self.OutputSerializer(invitation).data, status=status.HTTP_201_CREATED)


class MemberUpdateApi(TokenApi):
    required_perm = MEMBERS_MANAGE

    class InputSerializer(StrictSerializer):
        role = serializers.ChoiceField(choices=Role.choices)

    class OutputSerializer(MemberOutputSerializer):
        pass

    @extend_schema(request=InputSerializer, responses=OutputSerializer, summary="Change a member's role")
    def patch(self, request: Request, membership_id: int) -> Response:
        membership = access_membership(self.access, membership_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = membership_set_role(
            self.access.tenant, membership=membership, role=serializer.validated_data["role"], actor=self.access.actor
        )
        return Response(self.OutputSerializer(membership).data)


class MemberRemoveApi(TokenApi):
    required_perm = MEMBERS_MANAGE
    takes_no_input = True

    @extend_schema(request=None, responses={204: None}, summary="Remove a member")
    def delete(self, request: Request, membership_id: int) -> Response:
        membership = access_membership(self.access, membership_id)
        membership_remove(self.access.tenant, membership=membership, actor=self.access.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationListApi(TokenApi):
    takes_no_input = True

    class OutputSerializer(InvitationOutputSerializer):
        pass

    @extend_schema(responses=OutputSerializer(many=True), summary="List pending invitations")
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(pending_invitations_for(self.access.tenant), many=True).data)


class InvitationRevokeApi(TokenApi):
    required_perm = MEMBERS_MANAGE
    takes_no_input = True

    @extend_schema(request=None, responses={204: None}, summary="Cancel an invitation")
    def delete(self, request: Request, invitation_id: int) -> Response:
        invitation = access_invitation(self.access, invitation_id)
        invitation_revoke(self.access.tenant, invitation=invitation, actor=self.access.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Audit log -------------------------------------------------------------------------------------


class AuditListApi(TokenApi):
    required_perm = AUDIT_VIEW

    class FilterSerializer(StrictSerializer):
        before = serializers.IntegerField(
            required=False, min_value=1, max_value=2**63 - 1, help_text="Return entries older than this id."
        )
        limit = serializers.IntegerField(required=False, min_value=1, max_value=500, default=100)

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        created_at = serializers.DateTimeField()
        actor = serializers.CharField(source="actor_label")
        action = serializers.CharField()
        target_type = serializers.CharField()
        target_id = serializers.CharField()
        target = serializers.CharField(source="target_label")
        changes = serializers.DictField()
        ip_address = serializers.IPAddressField(allow_null=True)

    @extend_schema(
        parameters=[FilterSerializer], responses=OutputSerializer(many=True), summary="Audit log, newest first"
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        entries = audit_entries_for(self.access.tenant)
        if "before" in filters.validated_data:
            entries = entries.filter(id__lt=filters.validated_data["before"])
        return Response(self.OutputSerializer(entries[: filters.validated_data["limit"]], many=True).data)
