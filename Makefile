# radseg developer entry points. Each target creates .venv and installs what it needs first.
#   make test   the whole test suite (CI runs this through .ci/run)
#   make demo   synthetic studies -> ingest -> train -> predict, then the UI at http://127.0.0.1:5000
#   make lint   ruff, mypy, import contracts (lint-imports), hadolint
#   make bench  benchmarks (results in docs/benchmarks.md)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.radseg-installed
# torch comes from this machine's local wheels; the constraints keep pip from resolving another.
PIP := $(PY) -m pip install --disable-pip-version-check -q -c tools/constraints.txt
DEMO_HOME ?= var
DEMO_DATA ?= demo-data
DEMO_ITERATIONS ?= 400
PYTEST_ARGS ?=

.PHONY: install test demo demo-stop lint bench system-deps clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml tools/constraints.txt tools/install_detectron2.py
	$(PIP) torch==2.14.1 torchvision==0.29.1
	$(PIP) -e '.[dev,models]'
	$(PY) tools/install_detectron2.py
	touch $(STAMP)

# Debian packages the tests drive: chromium (Playwright, never a downloaded browser build),
# Orthanc with its DICOMweb plugin (a real PACS on loopback) and dicom3tools (dciodvfy).
SYSTEM_PACKAGES := chromium orthanc orthanc-dicomweb dicom3tools
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	[ -x /usr/sbin/Orthanc ] || missing="$$missing orthanc"; \
	[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing="$$missing orthanc-dicomweb"; \
	command -v dciodvfy >/dev/null 2>&1 || missing="$$missing dicom3tools"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "missing Debian packages:$$missing (sudo apt-get install$$missing); their tests skip"; fi; \
	fi

test: $(STAMP) system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	RADSEG_HOME=$(DEMO_HOME) DEMO_DATA=$(DEMO_DATA) DEMO_ITERATIONS=$(DEMO_ITERATIONS) \
	  PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash tools/demo.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/hadolint docker/Dockerfile.web docker/Dockerfile.worker

# Each benchmark compares against a baseline in the same run; `make bench BENCH=jobs` runs one.
BENCH ?= ingest jobs inference training web_load review_priority
bench: $(STAMP) system-deps
	@for b in $(BENCH); do \
	  if [ "$$b" = ingest ]; then mod=tests.bench; else mod=tests.bench.$$b; fi; \
	  echo "== $$mod"; $(PY) -m $$mod || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

demo-stop:
	-@for f in $(DEMO_HOME)/run/*.pid; do [ -f "$$f" ] && kill "$$(cat $$f)" 2>/dev/null; rm -f "$$f"; done; true
