# PSM Maps: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
export PSM_HOME ?= $(shell bash $(CURDIR)/scripts/psm_home.sh)
VENV ?= $(CURDIR)/.venv
BIN := $(VENV)/bin
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
PYTEST_ARGS ?=

.PHONY: bootstrap services migrate demo demo-fast stop lint test test-fast clean-psm

bootstrap:            ## install PostgreSQL+PostGIS+pgvector, Redis, Chromium and the venv (idempotent)
	@bash scripts/bootstrap.sh

services: bootstrap   ## start the project-managed PostgreSQL and Redis
	@$(BIN)/psm services up

migrate: services     ## migrate the database to head
	@$(BIN)/psm db upgrade

demo: migrate         ## everything, from a bare machine to a live soundscape map
	@bash scripts/demo.sh

demo-fast: migrate    ## the same with a tiny world and the tiny preset (used by the tests)
	@PSM_DEMO_FAST=1 bash scripts/demo.sh

stop:                 ## stop the demo's worker and dashboard, then the services
	@bash scripts/stop.sh

lint:                 ## ruff, mypy and the import contracts (pyproject [tool.importlinter])
	@$(BIN)/ruff check .
	@$(BIN)/mypy
	@$(BIN)/lint-imports --no-logo

test: services        ## lint, type-check, check the import contracts and run the whole test suite against real services
	@$(BIN)/ruff check .
	@$(BIN)/mypy
	@$(BIN)/lint-imports --no-logo
	@$(BIN)/pytest $(PYTEST_ARGS)

test-fast: services
	@$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)
