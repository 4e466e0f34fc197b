# Two commands do everything on a fresh machine with Python 3.11:
#   make demo   - create .venv, install tuneline, run the retrain flow on the embedded default
#   make test   - install the dev extras too, run the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build on these machines; an unpinned torch pulls several GB of CUDA wheels.
TORCH := torch==2.13.0
# The serving image's lock constrains every install, so the tests run the versions the image ships
# (tests/infra/test_serving_manifests.py checks it) however the package index has moved since.
LOCK := infra/serving/requirements.txt

.PHONY: demo test test-all bench services-up services-down deploy clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml $(LOCK)
	$(BIN)/pip install --quiet -c $(LOCK) $(TORCH)
	$(BIN)/pip install --quiet -c $(LOCK) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -c $(LOCK) -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/tuneline retrain

# The Prefect UI test drives Debian's Chromium (Playwright never downloads a browser here).
/usr/bin/chromium:
	$$([ "$$(id -u)" -eq 0 ] || echo sudo) apt-get update -qq
	$$([ "$$(id -u)" -eq 0 ] || echo sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

test: $(VENV)/.installed-dev /usr/bin/chromium
	$(BIN)/python -m pytest

test-all: $(VENV)/.installed-dev /usr/bin/chromium  ## slow and GPU tests too
	$(BIN)/python -m pytest -m ""

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/export_speed.py

# A Prefect server (:4200), an MLflow server (:5000) and a process worker on 127.0.0.1; state in .tuneline/services.
services-up: $(VENV)/.installed
	PATH=$(BIN):$$PATH infra/services.sh up

services-down:
	infra/services.sh down

# Register deployments/prefect.yaml with the server in PREFECT_API_URL (default: the one services-up starts).
deploy: $(VENV)/.installed
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:4200/api} $(BIN)/tuneline deploy

clean:
	rm -rf .tuneline .pytest_cache
