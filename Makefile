# Every install step of the project lives here: CI runs `make test` on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help .venv test lint demo bench sim-long clean

help:
	@echo "make demo   - start a local 4-node cluster, submit sample records, verify the trail"
	@echo "make test   - create .venv if needed and run the whole test suite"
	@echo "make lint   - ruff and mypy (strict)"
	@echo "make bench  - benchmarks (figures in docs/benchmarks.md)"

.venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

demo: $(STAMP)
	$(VENV)/bin/cityledger demo

bench: $(STAMP)
	$(PY) bench/verify.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
