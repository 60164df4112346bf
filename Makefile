# The two commands of the README: `make demo` (the main job) and `make test` (the whole suite).
# Both set everything up themselves on a fresh machine: the virtualenv, PostgreSQL, the collector build.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup services demo test bench bench-full

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

services:
	bash scripts/ensure-postgres.sh
	bash scripts/build-collector.sh

demo: setup
	$(PY) examples/demo.py

test: setup services
	$(PY) -m pytest
	PY=$(PY) bash scripts/test-pure-python.sh

bench: setup services
	command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }
	$(PY) -m benchmarks --quick
	$(PY) -m benchmarks --quick --only fastapi

bench-full: setup services
	command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }
	$(PY) -m benchmarks
