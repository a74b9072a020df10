"""Settings for the LLM gateway.

Everything comes from the environment (see README "Configuration"). With nothing set, the gateway runs
on an embedded default: SQLite, in-process cache and channel layer, Celery tasks run eagerly.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from gateway_project.env import database_from_url, envbool, envfloat, envint, envstr

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = envbool("DEBUG", False)
_DEV_SECRET = "dev-insecure-secret-key-change-me-0123456789abcdefghijklmnopqrstuvwxyz"
SECRET_KEY = envstr("SECRET_KEY", _DEV_SECRET)
ALLOWED_HOSTS = [h.strip() for h in envstr("ALLOWED_HOSTS", "*").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in envstr("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]
PUBLIC_URL = envstr("PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from our own static files, no CDN
    "django_htmx",
    "js_lib_htmx",  # htmx itself, as static files from PyPI
    "channels",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "tenants",
    "routing",
    "billing",
    "observability",
    "proxy",
]

# The proxy (/v1/) is served by proxy.asgi.ProxyHandler which runs no middleware at all; this stack
# only wraps the console, the management API and the admin.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "gateway_project.urls"
ASGI_APPLICATION = "gateway_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "tenants.context_processors.console",
            ],
        },
    }
]

DATABASE_URL = envstr("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": database_from_url(DATABASE_URL)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": envstr("SQLITE_PATH", str(BASE_DIR / "gateway.sqlite3")),
            "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = envstr("REDIS_URL", "")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Celery: a broker when one is configured, otherwise tasks run eagerly in-process.
CELERY_BROKER_URL = envstr("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "/"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = envstr("ACCOUNT_EMAIL_VERIFICATION", "mandatory")
# A six-character code typed on the next page: the new user never leaves the sign-up flow.
ACCOUNT_EMAIL_VERIFICATION_BY_CODE_ENABLED = True
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[LLM Gateway] "
ACCOUNT_ADAPTER = "tenants.adapters.AccountAdapter"
# Operators running a private gateway turn self-service sign-up off; invitations still work.
ACCOUNT_ALLOW_SIGNUPS = envbool("ACCOUNT_ALLOW_SIGNUPS", True)
# allauth's defaults limit logins (30/m per IP), sign-ups and resets; failed logins are stricter here.
ACCOUNT_RATE_LIMITS = {"login_failed": "10/m/ip,5/5m/key"}
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = envstr("MFA_TOTP_ISSUER", "LLM Gateway")

# Single sign-on through any OpenID Connect provider, when the operator configures one.
_OIDC_CLIENT_ID = envstr("OIDC_CLIENT_ID", "")
if _OIDC_CLIENT_ID:
    _OIDC_SERVER_URL = envstr("OIDC_SERVER_URL", "")
    if not _OIDC_SERVER_URL:
        raise ImproperlyConfigured("OIDC_CLIENT_ID is set but OIDC_SERVER_URL is not (the issuer URL)")
    SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "APPS": [
                {
                    "provider_id": envstr("OIDC_PROVIDER_ID", "sso"),
                    "name": envstr("OIDC_PROVIDER_NAME", "Single sign-on"),
                    "client_id": _OIDC_CLIENT_ID,
                    "secret": envstr("OIDC_CLIENT_SECRET", ""),
                    "settings": {"server_url": _OIDC_SERVER_URL},
                }
            ]
        }
    }
    # The identity provider has verified the address; asking again would only get in the way.
    SOCIALACCOUNT_EMAIL_VERIFICATION = "none"
    SOCIALACCOUNT_EMAIL_AUTHENTICATION = envbool("OIDC_EMAIL_AUTHENTICATION", False)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / ".staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "servestatic.storage.CompressedManifestStaticFilesStorage"}
    if not DEBUG
    else {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Email (Django 6.1 MAILERS). EMAIL_BACKEND picks the backend; each takes only its own options.
_EMAIL_BACKEND = envstr("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
_EMAIL_OPTIONS: dict = {}
if _EMAIL_BACKEND.endswith("smtp.EmailBackend"):
    _EMAIL_OPTIONS = {
        "host": envstr("EMAIL_HOST", "localhost"),
        "port": envint("EMAIL_PORT", 25),
        "username": envstr("EMAIL_HOST_USER", ""),
        "password": envstr("EMAIL_HOST_PASSWORD", ""),
        "use_tls": envbool("EMAIL_USE_TLS", False),
        "timeout": envint("EMAIL_TIMEOUT", 10),
    }
elif _EMAIL_BACKEND.endswith("filebased.EmailBackend"):
    _EMAIL_OPTIONS = {"file_path": envstr("EMAIL_FILE_PATH", str(BASE_DIR / ".emails"))}
MAILERS = {"default": {"BACKEND": _EMAIL_BACKEND, "OPTIONS": _EMAIL_OPTIONS}}
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "gateway@localhost")

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "tenants.apis.GatewayAutoSchema",
    # Every management endpoint authenticates with a management token (tenants.apis.TokenApi).
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "tenants.apis.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "LLM Gateway management API",
    "DESCRIPTION": "Manage a tenant's keys, providers, models and members. Authenticate with a management "
    "token (console: API tokens, or `gateway mint-token`) sent as `Authorization: Bearer <token>`.",
    "VERSION": "1.0.0",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "WARNING")},
    "loggers": {"gateway": {"level": envstr("LOG_LEVEL", "INFO"), "propagate": True}},
}

# --- Gateway ---------------------------------------------------------------------------------------
# Fernet keys (urlsafe base64, 32 bytes) separated by commas: the first encrypts, all decrypt, so a key
# can be rotated by prepending a new one and running `gateway rotate-encryption`.
GATEWAY_ENCRYPTION_KEY = envstr("GATEWAY_ENCRYPTION_KEY", "")


def _parse_networks(raw: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    nets = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ImproperlyConfigured(f"GATEWAY_PRIVATE_UPSTREAMS: {part!r} is not a CIDR") from None
    return nets


GATEWAY_PRIVATE_UPSTREAMS = _parse_networks(envstr("GATEWAY_PRIVATE_UPSTREAMS", ""))
# Upstream timeouts (seconds): connect, and read between bytes (LLMs can think for a while).
GATEWAY_UPSTREAM_CONNECT_TIMEOUT = envfloat("GATEWAY_UPSTREAM_CONNECT_TIMEOUT", 10.0)
GATEWAY_UPSTREAM_READ_TIMEOUT = envfloat("GATEWAY_UPSTREAM_READ_TIMEOUT", 600.0)
GATEWAY_UPSTREAM_MAX_CONNECTIONS = envint("GATEWAY_UPSTREAM_MAX_CONNECTIONS", 1000)
# Request bodies above this size are refused with 413 before parsing.
GATEWAY_MAX_BODY_BYTES = envint("GATEWAY_MAX_BODY_BYTES", 20 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = GATEWAY_MAX_BODY_BYTES
# Call logs are buffered in memory and bulk-inserted every interval or batch, whichever comes first.
GATEWAY_LOG_FLUSH_INTERVAL = envfloat("GATEWAY_LOG_FLUSH_INTERVAL", 0.5)
GATEWAY_LOG_BATCH_SIZE = envint("GATEWAY_LOG_BATCH_SIZE", 500)
# Safety net for the in-process key/config cache: entries are re-read at least this often even if an
# invalidation message was lost.
GATEWAY_CACHE_TTL = envfloat("GATEWAY_CACHE_TTL", 60.0)
# Budget reservations and parallel-request slots of a process that died are freed after this many
# seconds. A call running longer than this could let its budget be overshot, so keep it above the
# longest call you serve.
GATEWAY_RESERVATION_TTL = envfloat("GATEWAY_RESERVATION_TTL", 3600.0)
# Without Redis, processes learn about changes by polling the change log at this interval.
GATEWAY_INVALIDATION_POLL_INTERVAL = envfloat("GATEWAY_INVALIDATION_POLL_INTERVAL", 0.25)
