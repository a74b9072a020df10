"""Settings for the LLM gateway.

Everything comes from the environment (see README "Configuration"). With nothing set, the gateway runs
on an embedded default: SQLite, in-process cache and channel layer, Celery tasks run eagerly.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from gateway_project.common.env import (
    LEGACY_DEV_SECRET,
    database_from_url,
    default_public_url,
    dev_secret_key,
    envbool,
    envfloat,
    envint,
    envstr,
    fernet_key_from_secret,
    is_loopback_host,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = envbool("DEBUG", False)
# `make run` sets GATEWAY_DEV=1: the quickstart on a laptop, with development defaults that a
# production start (`make serve`, any other ASGI server) never gets.
GATEWAY_DEV = envbool("GATEWAY_DEV", False)
HOST = envstr("HOST", "127.0.0.1")
PORT = envint("PORT", 8000)
# pytest sets PYTEST_VERSION for its whole run; the tests bring their own key.
_TESTING = bool(os.environ.get("PYTEST_VERSION"))
SECRET_KEY = envstr("SECRET_KEY", "")
_DEV_KEY_FROM_FILE = False
if not SECRET_KEY:
    if GATEWAY_DEV and not is_loopback_host(HOST):
        # The development key sits in a file next to the code and the demo login derives from it:
        # fine on a laptop, not on an address other machines can reach.
        raise ImproperlyConfigured(
            f"HOST={HOST} is reachable from other machines, but SECRET_KEY is not set. Set your own SECRET_KEY "
            "(the demo key and password derive from it) to serve on a non-loopback address, or use HOST=127.0.0.1."
        )
    if GATEWAY_DEV or DEBUG:
        _DEV_KEY_FROM_FILE = True
        SECRET_KEY = dev_secret_key(Path(envstr("GATEWAY_SECRET_FILE", str(BASE_DIR / ".gateway-secret"))))
    elif _TESTING:
        SECRET_KEY = "test-only-secret-key-never-used-outside-pytest-0123456789abcdefghijkl"
    else:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. A production start needs its own secret, e.g. "
            "SECRET_KEY=\"$(python -c 'import secrets; print(secrets.token_urlsafe(50))')\" make serve "
            "(or SECRET_KEY_FILE=/path/to/file). `make run` uses a development key generated into "
            ".gateway-secret; to run manage.py against that install, prefix the command with GATEWAY_DEV=1."
        )
# Links in e-mails (password reset, verification, invitations, budget alerts) are built from
# PUBLIC_URL, never from the request's Host header, which a client chooses.
PUBLIC_URL = (envstr("PUBLIC_URL", "") or default_public_url(HOST, PORT)).rstrip("/")
_PUBLIC_HOST = urlsplit(PUBLIC_URL).hostname or "127.0.0.1"
# Only the public host and loopback by default; `*` only when the operator writes it.
ALLOWED_HOSTS = [h.strip() for h in envstr("ALLOWED_HOSTS", "").split(",") if h.strip()] or list(
    dict.fromkeys([f"[{_PUBLIC_HOST}]" if ":" in _PUBLIC_HOST else _PUBLIC_HOST, "127.0.0.1", "localhost", "[::1]"])
)
CSRF_TRUSTED_ORIGINS = [o.strip() for o in envstr("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

# HTTPS: when the public address is https (or the operator says so), cookies never travel in clear
# and browsers are told to stay on https.
SECURE_SSL = envbool("SECURE_SSL", PUBLIC_URL.startswith("https://"))
SESSION_COOKIE_SECURE = SECURE_SSL
CSRF_COOKIE_SECURE = SECURE_SSL
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31536000) if SECURE_SSL else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
# Behind a TLS-terminating proxy Django sees http; trust the proxy's X-Forwarded-Proto only when the
# operator says the proxy sets it (otherwise any client could claim https).
if envbool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Content-Security-Policy on every console page: scripts only from our own static files, so an
# injected <script> or event handler does not run. Inline style attributes are used by the templates
# (and by htmx for its indicator), hence 'unsafe-inline' for styles only.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF, CSP.UNSAFE_INLINE],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}

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
    # The top layer: the `gateway` management command and the wiring between apps (gateway_project.apps).
    "gateway_project.apps.GatewayProjectConfig",
]

# The proxy (/v1/) is served by proxy.asgi.ProxyHandler which runs no middleware at all; this stack
# only wraps the console, the management API and the admin.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
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
# Under pytest, tests/isolation.py has already pointed REDIS_URL at a database of this test process's own.
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "gateway_project.common.cache.ResilientRedisCache", "LOCATION": REDIS_URL}}
    # Each process's channel layer waits for websocket messages in a blocking BZPOPMIN of 5 s (channels_redis'
    # brpop_timeout), and redis-py 8 gives every read a 5 s timeout by default: the read timed out during the
    # wait, and an idle live-log socket died with "Timeout reading from Redis". Reads get a bound longer than
    # the wait, still finite so a stalled Redis is noticed.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 10}]},
        }
    }
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
# TOTP secrets and recovery-code seeds are encrypted at rest (tenants.mfa).
MFA_ADAPTER = "tenants.mfa.MFAAdapter"

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
    "DEFAULT_PARSER_CLASSES": ["tenants.parsers.JsonParser"],
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
    # The proxy's /v1 endpoints are plain Django views: gateway_project.openapi_docs describes them.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "gateway_project.openapi_docs.add_gateway_api",
    ],
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
if not GATEWAY_ENCRYPTION_KEY and _DEV_KEY_FROM_FILE:
    # Quickstart installs from before per-install keys encrypted provider keys under the shared
    # development secret: they still decrypt (new ones use this install's key; `gateway
    # rotate-encryption` moves the old ones over).
    GATEWAY_ENCRYPTION_KEY = ",".join(fernet_key_from_secret(k) for k in (SECRET_KEY, LEGACY_DEV_SECRET))


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


# `make run` on a loopback address talks to local model servers (Ollama, vLLM) out of the box; any
# other start refuses loopback upstreams unless the operator lists them.
_DEV_PRIVATE_UPSTREAMS = "127.0.0.0/8,::1/128" if GATEWAY_DEV and is_loopback_host(HOST) else ""
GATEWAY_PRIVATE_UPSTREAMS = _parse_networks(envstr("GATEWAY_PRIVATE_UPSTREAMS", _DEV_PRIVATE_UPSTREAMS))
# Upstream timeouts (seconds): connect, and read between bytes (LLMs can think for a while).
GATEWAY_UPSTREAM_CONNECT_TIMEOUT = envfloat("GATEWAY_UPSTREAM_CONNECT_TIMEOUT", 10.0)
GATEWAY_UPSTREAM_READ_TIMEOUT = envfloat("GATEWAY_UPSTREAM_READ_TIMEOUT", 600.0)
# A stream whose upstream sends nothing for this long (after its first event) ends with an
# upstream_timeout error event, within the model's timeout_s. 0: only timeout_s bounds it.
GATEWAY_STREAM_IDLE_TIMEOUT = envfloat("GATEWAY_STREAM_IDLE_TIMEOUT", 120.0)
# The PII scan (proxy.steps.pii, proxy.steps.scanpool): request bodies up to GATEWAY_PII_INLINE_BYTES are
# scanned on the event loop (a few milliseconds at worst); larger ones in GATEWAY_PII_SCAN_WORKERS
# scanner processes, one scan per tenant at a time, within GATEWAY_PII_SCAN_BUDGET seconds; bodies over
# GATEWAY_PII_SCAN_MAX_BYTES are refused unscanned (413 pii_scan_too_large), as is a scan over budget.
# Seconds a client has to send its whole request body (a trickled body cannot hold a connection open).
GATEWAY_BODY_READ_TIMEOUT = envfloat("GATEWAY_BODY_READ_TIMEOUT", 60.0)
GATEWAY_PII_INLINE_BYTES = envint("GATEWAY_PII_INLINE_BYTES", 8192)
GATEWAY_PII_SCAN_WORKERS = envint("GATEWAY_PII_SCAN_WORKERS", 2)
GATEWAY_PII_SCAN_BUDGET = envfloat("GATEWAY_PII_SCAN_BUDGET", 2.0)
GATEWAY_PII_SCAN_MAX_BYTES = envint("GATEWAY_PII_SCAN_MAX_BYTES", 4 * 1024 * 1024)
GATEWAY_UPSTREAM_MAX_CONNECTIONS = envint("GATEWAY_UPSTREAM_MAX_CONNECTIONS", 1000)
# Request bodies above this size are refused with 413 before parsing.
GATEWAY_MAX_BODY_BYTES = envint("GATEWAY_MAX_BODY_BYTES", 20 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = GATEWAY_MAX_BODY_BYTES
# Call logs are buffered in memory and bulk-inserted every interval or batch, whichever comes first.
GATEWAY_LOG_FLUSH_INTERVAL = envfloat("GATEWAY_LOG_FLUSH_INTERVAL", 0.5)
GATEWAY_LOG_BATCH_SIZE = envint("GATEWAY_LOG_BATCH_SIZE", 500)
# A stored Responses API answer reaches the database with its call's log row, a flush or two later: a
# `previous_response_id` (or GET) younger than this waits for it rather than answering 404.
GATEWAY_RESPONSE_STORE_WAIT = envfloat("GATEWAY_RESPONSE_STORE_WAIT", 5.0)
# A/B comparisons of splits with at least this many calls in their window read the hourly rollups
# instead of the calls (observability.ab_rollups; PostgreSQL).
GATEWAY_AB_ROLLUP_MIN_CALLS = envint("GATEWAY_AB_ROLLUP_MIN_CALLS", 20_000)
# With REDIS_URL, a server process hands its call logs to a durable Redis stream, written into the
# database by a consumer group (observability.stream): by default a consumer in every gateway process;
# GATEWAY_LOG_CONSUMER=0 leaves it to `manage.py gateway consume-logs` processes.
GATEWAY_LOG_STREAM = envbool("GATEWAY_LOG_STREAM", True)
GATEWAY_LOG_CONSUMER = envbool("GATEWAY_LOG_CONSUMER", True)
# Entries a consumer took but did not acknowledge (it died) are claimed by another after this long.
GATEWAY_LOG_CLAIM_IDLE = envfloat("GATEWAY_LOG_CLAIM_IDLE", 30.0)
# Every call-log row of a server process goes to a local append-only spool until the database has it
# (observability.spool): a killed worker or a Redis that lost its data loses no answered call. A
# directory per database identity under GATEWAY_SPOOL_DIR; segments rotate every GATEWAY_SPOOL_SEGMENT s
# and are checked against the database (and what is missing stored) once GATEWAY_SPOOL_GRACE s old.
GATEWAY_SPOOL = envbool("GATEWAY_SPOOL", True)
GATEWAY_SPOOL_DIR = envstr("GATEWAY_SPOOL_DIR", str(BASE_DIR / ".spool"))
GATEWAY_SPOOL_SEGMENT = envfloat("GATEWAY_SPOOL_SEGMENT", 5.0)
GATEWAY_SPOOL_GRACE = envfloat("GATEWAY_SPOOL_GRACE", 15.0)
GATEWAY_SPOOL_MAX_BYTES = envint("GATEWAY_SPOOL_MAX_BYTES", 256 * 1024 * 1024)
# Safety net for the in-process key/config cache: entries are re-read at least this often even if an
# invalidation message was lost.
GATEWAY_CACHE_TTL = envfloat("GATEWAY_CACHE_TTL", 60.0)
# The longest a call that never settles holds its budget reservation and parallel slot: each holds
# them for its own timeout_s plus 30 s, at most this; a dead process's are freed sooner, by its lease
# (GATEWAY_LEASE_TTL, proxy.recovery). Keep it above the longest call you serve.
GATEWAY_RESERVATION_TTL = envfloat("GATEWAY_RESERVATION_TTL", 3600.0)
# After Redis lost its data (or restarted from older data) budget counters are rebuilt from the ledger
# once the new epoch is this old: time for every process to notice (each checks every second), store
# its spooled call logs and register its open reservations again (proxy.recovery). Budgeted calls wait
# for it; nothing else does.
GATEWAY_REBUILD_DELAY = envfloat("GATEWAY_REBUILD_DELAY", 3.0)
# A process renews its lease in Redis every second; once it has not for this long, the reservations and
# parallel slots it held are freed (it died: SIGKILL, OOM, a lost machine).
GATEWAY_LEASE_TTL = envfloat("GATEWAY_LEASE_TTL", 5.0)
# Without Redis, processes learn about changes by polling the change log at this interval.
GATEWAY_INVALIDATION_POLL_INTERVAL = envfloat("GATEWAY_INVALIDATION_POLL_INTERVAL", 0.25)
# First retry waits about this many seconds (doubling per retry, with jitter, at most 8 s) unless the
# provider says how long with Retry-After / retry-after-ms.
GATEWAY_RETRY_BACKOFF = envfloat("GATEWAY_RETRY_BACKOFF", 0.5)

# --- Stripe (billing.stripe.sync) ------------------------------------------------------------------
# Stripe is on when STRIPE_API_KEY is set (or STRIPE_API_KEY_FILE). STRIPE_API_BASE points the client
# at another address (tests use a loopback fake); empty means api.stripe.com.
STRIPE_API_KEY = envstr("STRIPE_API_KEY", "")
STRIPE_API_BASE = envstr("STRIPE_API_BASE", "").rstrip("/")
STRIPE_WEBHOOK_SECRET = envstr("STRIPE_WEBHOOK_SECRET", "")
# Seconds per Stripe request: a push runs in a Celery worker, the portal link in a console click.
STRIPE_TIMEOUT = envfloat("STRIPE_TIMEOUT", 20.0)
# The stripe library logs every response body at INFO, and Stripe quotes a refused key (masked) in it:
# only its warnings reach our logs, whatever LOG_LEVEL says.
LOGGING["loggers"]["stripe"] = {"level": "WARNING", "propagate": True}
# Periodic tasks (`celery -A gateway_project beat`). Other entries are added to this dict by key.
CELERY_BEAT_SCHEDULE: dict = {}
# Pushes finalized invoices Stripe has not got yet, each when its backoff has passed.
CELERY_BEAT_SCHEDULE["billing-stripe-sync"] = {"task": "billing.tasks.stripe_sync_task", "schedule": 60.0}

# --- Invoices (billing.invoicing.services) ---------------------------------------------------------
# Printed on every invoice PDF as the seller.
GATEWAY_OPERATOR_NAME = envstr("GATEWAY_OPERATOR_NAME", "LLM Gateway operator")
# Lines separated by newlines (or "\n" in the environment variable).
GATEWAY_OPERATOR_ADDRESS = envstr("GATEWAY_OPERATOR_ADDRESS", "").replace("\\n", "\n")
# Months end at different UTC hours in different time zones (UTC-12 .. UTC+14), so the close runs
# every hour of the 1st and 2nd; it is idempotent and skips months that have not ended locally.
from celery.schedules import crontab  # noqa: E402  (here, next to its only use)

CELERY_BEAT_SCHEDULE["billing-finalize-invoices"] = {
    "task": "billing.tasks.finalize_invoices_task",
    "schedule": crontab(minute=5, day_of_month="1,2"),
}
# Drafts follow the ledger: tenants whose ledger moved since their draft was built get it rebuilt.
CELERY_BEAT_SCHEDULE["billing-refresh-drafts"] = {"task": "billing.tasks.refresh_drafts_task", "schedule": 600.0}

# --- Observability: call-log partitions and retention, /metrics, traces -------------------------------
# The call log's daily partitions a week ahead, and per-tenant retention (observability.partitions).
CELERY_BEAT_SCHEDULE["observability-partitions"] = {
    "task": "observability.tasks.calllog_partitions_create_ahead",
    "schedule": 3600.0,
}
# LLM-judge evaluators call the gateway itself here (observability.evaluators), with this timeout.
GATEWAY_SELF_URL = envstr("GATEWAY_SELF_URL", "") or PUBLIC_URL
GATEWAY_EVALUATOR_TIMEOUT = envfloat("GATEWAY_EVALUATOR_TIMEOUT", 60.0)
# A/B splits that end themselves (split.stop_when, observability.splits).
CELERY_BEAT_SCHEDULE["observability-ab-splits"] = {"task": "observability.tasks.ab_splits_check", "schedule": 60.0}
CELERY_BEAT_SCHEDULE["observability-retention"] = {
    "task": "observability.tasks.calllog_retention_apply",
    "schedule": 3600.0,
}
# /metrics answers only with `Authorization: Bearer <this token>`; unset, /metrics does not exist (404).
GATEWAY_METRICS_TOKEN = envstr("GATEWAY_METRICS_TOKEN", "")
# OpenTelemetry traces (observability.traces): on when OTEL_EXPORTER_OTLP_ENDPOINT is set (OTLP over
# HTTP/protobuf; the SDK's own OTEL_* variables such as OTEL_EXPORTER_OTLP_HEADERS apply).
OTEL_EXPORTER_OTLP_ENDPOINT = envstr("OTEL_EXPORTER_OTLP_ENDPOINT", "").rstrip("/")
OTEL_SERVICE_NAME = envstr("OTEL_SERVICE_NAME", "llm-gateway")
