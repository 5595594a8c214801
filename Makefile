# pyswarm — one command each: `make demo`, `make test` (both install first).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-e2e lint bench proto clean

install: $(STAMP)
	@$(PY) -m compileall -q api agent cli overlay manager deploy >/dev/null
	@bash deploy/install.sh host

$(STAMP): pyproject.toml deploy/install.sh
	@bash deploy/install.sh packages
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing the Python environment in $(VENV) (log: $(VENV)/pip.log)"
	@( $(PY) -m pip install -q --upgrade pip && \
	   $(PY) -m pip install -q -e '.[dev]' --config-settings editable_mode=compat ) \
	    >$(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@# Byte-compile once: the CLI's start-up time depends on it, and some
	@# environments set PYTHONDONTWRITEBYTECODE, which would recompile every run.
	@$(PY) -m compileall -q -j 0 $(VENV)/lib >/dev/null
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
# Unit, integration and the e2e lab group (~3 min of the ~8); `make test-e2e` runs
# the lab group alone.
test: lint
	$(PY) -m pytest -m "not bench" tests

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
