# Doorman: the two commands a new machine needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install redis-server demo test test-fast check bench faults clean dashboard

install: $(STAMP) redis-server

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

# The embedded Redis and the test fixtures start their own redis-server binary.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || scripts/install-redis-server

demo: install
	$(VENV)/bin/doorman simulate --tour

# Three at a time: most of a test is waiting on real redis-servers and workers. The fault
# matrix's summary is printed by `make faults`, which runs in one process.
test: install
	$(PY) -m pytest -q -n 3 tests

# The fast lane: unit and contract tests without the slow ones (processes, property runs of
# hundreds of examples, timing); the full suite above runs those too.
test-fast: install
	$(PY) -m pytest -q -n 3 -m "not slow" tests/unit tests/contract

check: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The fault matrix: each fault injected for real, then a summary (alerts lost and duplicates must be 0).
faults: install
	$(PY) -m pytest -q tests/faults

bench: install
	$(PY) bench/run.py

# Regenerate the CloudWatch dashboard in infra/doorman.yaml from the metric catalogue.
dashboard: install
	$(PY) -m chalicelib.dashboard --write

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
