# Quick start: `make run` (set up, then the default job on the built-in data) and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.autodrs-installed

.PHONY: setup run test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test,serve,ray]"
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps recbole==1.2.1
	touch $(STAMP)

run: setup
	$(VENV)/bin/autodrs bench --data movielens-100k --baselines all --seeds 1 --out runs/quickstart

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

test: setup lint
	$(PY) -m pytest tests

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
