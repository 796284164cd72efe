# urbanos — two commands: `make run` serves the broker, `make test` runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check services install bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/urbanos serve

check: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

# PostgreSQL + PostGIS, Mosquitto, chromium, node and the test OpenID Connect provider:
# installed (as root) and started when missing; what cannot be had is named once and its
# tests skipped (failed when CI=true)
services:
	scripts/test-services

# two processes, each test module on one of them (module fixtures such as the OIDC
# providers are started once); each process has its own PostgreSQL database
test: check services
	$(BIN)/pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) data build *.egg-info
