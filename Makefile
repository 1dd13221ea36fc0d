# Every install step of the project lives here: CI runs `make test` on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help .venv test lint screenshots demo bench soak clean

help:
	@echo "make demo   - start a local 4-node cluster, submit sample records, verify the trail"
	@echo "make test   - create .venv if needed and run the whole test suite"
	@echo "make lint   - ruff and mypy (strict)"
	@echo "make screenshots - the explorer's screenshots in docs/explorer/ (a browser test run)"
	@echo "make bench  - benchmarks (figures in docs/benchmarks.md)"

.venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

test: $(STAMP)
	@# The network fault tests build namespaces with iproute2 (root only; they say why they skip).
	@command -v ip >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		apt-get install -y -qq iproute2 >/dev/null; } || echo "iproute2 not installed"
	@# The browser tests run Debian's Chromium headless, over TLS (root only to install).
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		apt-get install -y -qq chromium >/dev/null; } || echo "chromium not installed"
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The explorer's screenshots in docs/explorer/ (tracked), from a browser test run against a
# fresh cluster; `make test` writes its own to build/screenshots/ (ignored), keeping the tree clean.
screenshots: $(STAMP)
	CITYLEDGER_SCREENSHOTS=$(CURDIR)/docs/explorer $(PY) -m pytest tests/cli/test_explorer.py -q

demo: $(STAMP)
	$(VENV)/bin/cityledger demo

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	@# The reference beside CityLedger's figures: Debian's etcd-server (root only to install).
	@command -v etcd >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		apt-get install -y -qq etcd-server >/dev/null; } || echo "etcd-server not installed"
	$(PY) bench/cluster.py all --plots docs/bench --out docs/bench/cluster.json
	$(PY) bench/scaling.py --sizes 10000,100000 --plots docs/bench --out docs/bench/scaling.json
	$(PY) bench/verify.py

soak: $(STAMP)
	CITYLEDGER_SLOW=1 $(PY) -m pytest tests/faults -k soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
