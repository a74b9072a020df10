from django.urls import path

from tenants import apis, views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("tenants/new/", views.tenant_new, name="tenant-new"),
    path("invitations/<str:token>/", views.invitation_accept_view, name="invitation-accept"),
    path("t/<slug:slug>/", views.overview, name="tenant-overview"),
    path("t/<slug:slug>/keys/", views.keys, name="keys"),
    path("t/<slug:slug>/keys/<int:key_id>/", views.key_detail, name="key-detail"),
    path("t/<slug:slug>/keys/<int:key_id>/revoke/", views.key_revoke, name="key-revoke"),
    path("t/<slug:slug>/keys/<int:key_id>/rotate/", views.key_rotate, name="key-rotate"),
    path("t/<slug:slug>/members/", views.members, name="members"),
    path("t/<slug:slug>/members/<int:membership_id>/role/", views.member_role, name="member-role"),
    path("t/<slug:slug>/members/<int:membership_id>/remove/", views.member_remove, name="member-remove"),
    path(
        "t/<slug:slug>/invitations/<int:invitation_id>/revoke/",
        views.invitation_revoke_view,
        name="invitation-revoke",
    ),
    path("t/<slug:slug>/tokens/", views.tokens, name="tokens"),
    path("t/<slug:slug>/tokens/<int:token_id>/revoke/", views.token_revoke, name="token-revoke"),
    path("t/<slug:slug>/settings/", views.tenant_settings, name="tenant-settings"),
    path("t/<slug:slug>/delete/", views.tenant_delete_view, name="tenant-delete"),
    path("t/<slug:slug>/export.yaml", views.export_yaml, name="tenant-export"),
    path("t/<slug:slug>/audit/", views.audit_log, name="audit"),
]

# Mounted under /api/v1/ by gateway_project.urls.
api_urlpatterns = [
    path("keys/", apis.by_method(get=apis.KeyListApi, post=apis.KeyCreateApi), name="api-keys"),
    path(
        "keys/<int:key_id>/",
        apis.by_method(get=apis.KeyDetailApi, patch=apis.KeyUpdateApi),
        name="api-key-detail",
    ),
    path("keys/<int:key_id>/revoke/", apis.KeyRevokeApi.as_view(), name="api-key-revoke"),
    path("keys/<int:key_id>/rotate/", apis.KeyRotateApi.as_view(), name="api-key-rotate"),
    path("members/", apis.by_method(get=apis.MemberListApi, post=apis.MemberInviteApi), name="api-members"),
    path(
        "members/<int:membership_id>/",
        apis.by_method(patch=apis.MemberUpdateApi, delete=apis.MemberRemoveApi),
        name="api-member-detail",
    ),
    path("invitations/", apis.InvitationListApi.as_view(), name="api-invitations"),
    path("invitations/<int:invitation_id>/", apis.InvitationRevokeApi.as_view(), name="api-invitation-detail"),
    path("audit/", apis.AuditListApi.as_view(), name="api-audit"),
]
