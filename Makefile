# Quick start: `make run` (set up, then the default job on the built-in data) and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.autodrs-installed
# the exact torch build, installed first so that autodrs's `torch>=2.3` is already met and pip
# never pulls another build; TORCH_INDEX names an extra package index where one is needed
TORCH ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: setup browser run test lint clean

setup: $(STAMP)

# movielens-100k is read from the data files inside the recbole wheel; recbole itself is never
# imported, so it is installed without its (heavy) dependencies
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)" \
		$(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test,serve,ray,mlflow,tensorboard]"
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps recbole==1.2.1
	touch $(STAMP)

run: setup
	$(VENV)/bin/autodrs search --data movielens-100k --budget 5m --out runs/quickstart --overwrite

# headless Chromium renders report.html in the report tests (Debian's package)
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

test: setup lint browser
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
