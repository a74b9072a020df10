# The two commands: `make run` (quickstart on the embedded default) and `make test` (`make test-fast`: no servers).
SHELL := /bin/bash
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1

export UV_PYTHON_DOWNLOADS := never
# Some environments set PYTHONDONTWRITEBYTECODE: every start (each test server, each `make run`) would
# then compile Django and the project again, about 2 s of CPU each time. Let Python cache bytecode.
unexport PYTHONDONTWRITEBYTECODE
export DJANGO_SETTINGS_MODULE := gateway_project.settings

UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
# uv must find a Python 3.12; pyenv shims that point elsewhere confuse it, so look for a real one.
PY312 ?= $(shell for p in python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && { command -v "$$p"; break; }; done)
PYTHON := .venv/bin/python
NATIVE_SCAN := routing/policies/_scan.so
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/gateway
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
# The suite runs in two processes (pytest-xdist); a file stays on one process, so its module fixtures
# are built once. Every run is isolated from every other on the machine (tests/isolation.py): a run id
# (GATEWAY_TEST_RUN, random unless set) ends each test database's name (test_gateway_gw0_<run>), and
# each process takes a free Redis database of its own (TEST_REDIS_URL's, else the next free one below
# it) under a lock in Redis database 0, flushing only that one. Two `make test` at once are fine.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?= -n $(PYTEST_WORKERS) --dist loadfile

.PHONY: install install-dev run serve test test-fast test-faults bench lint migrate

# `make run` and `make serve` install the runtime dependencies only (no test tools, SDKs or browser
# drivers: 276 MB instead of 602 MB); `make test`, `lint` and `bench` add the dev group. --inexact: a
# runtime sync leaves the dev tools a test run installed where they are.
.venv/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install -q uv
	$(UV) sync --frozen --no-dev --inexact $(if $(PY312),-p $(PY312),-p 3.12)
	@touch $@

.venv/.synced-dev: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install -q uv
	$(UV) sync --frozen $(if $(PY312),-p $(PY312),-p 3.12)
	@touch $@ .venv/.synced

install: .venv/.synced $(NATIVE_SCAN)

install-dev: .venv/.synced-dev $(NATIVE_SCAN)

# The PII scanner's dense passes in C (routing/policies/_scan.c; issue 19: 5 to 30 times faster than the
# same passes in Python, which still run where this is not built). Python finds it by the plain ".so"
# suffix. Without a C compiler the build warns and the gateway runs on the Python passes.
$(NATIVE_SCAN): routing/policies/_scan.c | .venv/.synced
	@inc=$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])') && \
		$${CC:-cc} -O2 -fPIC -shared -fno-strict-aliasing -I"$$inc" $< -o $@ \
		|| echo "warning: routing/policies/_scan.c did not build; PII scans run in Python (slower)" >&2

migrate: install
	$(PYTHON) manage.py migrate --noinput -v0

GRANIAN = .venv/bin/granian --interface asgi --host $(HOST) --port $(PORT) --workers $(WORKERS) \
	--loop uvloop --log-level warning --respawn-failed-workers gateway_project.asgi:application

# GATEWAY_DEV=1: development defaults (a secret generated into .gateway-secret, loopback upstreams
# allowed on a loopback HOST). One Django start checks the port, migrates and collects static files
# only if needed, seeds the demo and prints the quickstart; then the server starts.
run: install
	@GATEWAY_DEV=1 HOST=$(HOST) PORT=$(PORT) $(PYTHON) manage.py gateway --skip-checks bootstrap
	@GATEWAY_DEV=1 HOST=$(HOST) PORT=$(PORT) $(GRANIAN)

# Production: SECRET_KEY is required (settings refuse to start without it); no migrations, no seeding.
serve: install
	@test -n "$$SECRET_KEY$$SECRET_KEY_FILE" || { echo "make serve: SECRET_KEY is not set. Set it (or SECRET_KEY_FILE) to a long random value, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(50))'. For a local try-out use make run." >&2; exit 1; }
	@HOST=$(HOST) PORT=$(PORT) $(PYTHON) manage.py gateway preflight
	HOST=$(HOST) PORT=$(PORT) $(GRANIAN)

# Everything; test-fast leaves out tests/e2e (the tests that start servers: gateway processes, a browser).
test: install-dev
	@# ServeStatic serves from STATIC_ROOT in production; the tests use the same setup.
	@SECRET_KEY=$${SECRET_KEY:-collectstatic-only} $(PYTHON) manage.py gateway preflight --static-only
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(PYTHON) -m pytest $(PYTEST_ARGS)

test-fast: install-dev
	@SECRET_KEY=$${SECRET_KEY:-collectstatic-only} $(PYTHON) manage.py gateway preflight --static-only
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(PYTHON) -m pytest $(PYTEST_ARGS) -m "not e2e"

# The fault-injection suite alone (tests/faults/: workers and Redis killed under real processes).
test-faults: install-dev
	@SECRET_KEY=$${SECRET_KEY:-collectstatic-only} $(PYTHON) manage.py gateway preflight --static-only
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(PYTHON) -m pytest $(PYTEST_ARGS) -m faults

# Style, the import contracts (pyproject.toml [tool.importlinter]) and types ([tool.mypy]). mypy's django-stubs
# plugin imports the settings, which need a SECRET_KEY; the one here is for that import only.
lint: install-dev
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports --no-logo
	SECRET_KEY=lint .venv/bin/mypy

bench: install-dev
	$(PYTHON) -m tests.bench $(BENCH_ARGS)
