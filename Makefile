# The two commands: `make run` (quickstart on the embedded default) and `make test`.
SHELL := /bin/bash
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1

export UV_PYTHON_DOWNLOADS := never
export DJANGO_SETTINGS_MODULE := gateway_project.settings

UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
# uv must find a Python 3.12; pyenv shims that point elsewhere confuse it, so look for a real one.
PY312 ?= $(shell for p in python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && { command -v "$$p"; break; }; done)
PYTHON := .venv/bin/python
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/gateway
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: install run serve test bench lint migrate

.venv/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install -q uv
	$(UV) sync --frozen $(if $(PY312),-p $(PY312),-p 3.12)
	@touch $@

install: .venv/.synced

migrate: install
	$(PYTHON) manage.py migrate --noinput -v0

run: install
	$(PYTHON) manage.py migrate --noinput -v0
	$(PYTHON) manage.py collectstatic --noinput -v0
	$(PYTHON) manage.py gateway seed-demo >/dev/null
	@HOST=$(HOST) PORT=$(PORT) $(PYTHON) manage.py gateway quickstart
	@$(MAKE) --no-print-directory serve

serve: install
	$(PYTHON) manage.py collectstatic --noinput -v0
	.venv/bin/granian --interface asgi --host $(HOST) --port $(PORT) --workers $(WORKERS) \
		--loop uvloop --log-level warning --respawn-failed-workers gateway_project.asgi:application

test: install
	@# ServeStatic serves from STATIC_ROOT in production; the tests use the same setup.
	$(PYTHON) manage.py collectstatic --noinput -v0
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(PYTHON) -m pytest $(PYTEST_ARGS)

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

bench: install
	$(PYTHON) -m tests.bench $(BENCH_ARGS)
