# pyswarm — one command each: `make demo`, `make test` (both install first).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-e2e lint bench proto clean

install: $(STAMP)
	@bash deploy/install.sh host

$(STAMP): pyproject.toml deploy/install.sh
	@bash deploy/install.sh packages
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: install
	@bash deploy/demo.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The default suite: lint, unit and integration. The slow multi-host group is
# `make test-e2e` (pytest -m e2e).
test: lint
	$(PY) -m pytest -m "not e2e and not bench" tests

test-e2e: install
	$(PY) -m pytest -m e2e tests

bench: install
	$(PY) -m pytest -m bench -s tests/bench

# Regenerates api/*_pb2*.py from api/*.proto; the generated files are committed
# and never edited by hand.
proto:
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" \
	    $(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. \
	    --mypy_out=. --mypy_grpc_out=. api/*.proto

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
