# Two commands on a fresh machine: `make run` and `make test` (both set up on first use).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup browser run test lint lock bench clean db

setup: ## create .venv (Python 3.10) and install requirements.lock; fast when unchanged
	@scripts/setup.sh

db: setup ## migrate the store and load the demo data (idempotent)
	@$(BIN)/crm db upgrade
	@$(BIN)/crm seed data/demo

run: setup ## start everything on the embedded default (SQLite) with demo data
	@$(BIN)/crm run

browser: ## Debian's Chromium for the browser tests (installed when missing)
	@scripts/ensure-chromium.sh

test: setup browser ## run the whole test suite (SQLite, PostgreSQL, real servers, Chromium)
	@$(BIN)/python -m pytest $(PYTEST_ARGS)

PACKAGES := actions bench bot channels cli console contact_history crm_settings \
	crm_store runtime tests

lint: setup ## ruff check and ruff format --check over every package
	@$(BIN)/ruff check $(PACKAGES)
	@$(BIN)/ruff format --check $(PACKAGES)

bench: setup ## store benchmark at the documented size (see docs/benchmarks.md)
	@$(BIN)/crm bench store

lock: ## re-resolve requirements.in into requirements.lock in one step
	@rm -rf /tmp/crm-lock-venv && $$(scripts/find-python.sh) -m venv /tmp/crm-lock-venv
	@/tmp/crm-lock-venv/bin/pip install -q "pip<24.1" && /tmp/crm-lock-venv/bin/pip install -q -r requirements.in
	@/tmp/crm-lock-venv/bin/pip check
	@/tmp/crm-lock-venv/bin/pip freeze --exclude-editable > requirements.lock
	@echo "requirements.lock updated; run make setup"

clean:
	rm -rf $(VENV) var/*.db* .pytest_cache
