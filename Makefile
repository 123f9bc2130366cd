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

.PHONY: install test demo demo-stop lint bench system-deps node-deps rt-reader ohif clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml tools/constraints.txt tools/install_detectron2.py
	$(PIP) torch==2.14.1 torchvision==0.29.1
	$(PIP) -e '.[dev,models]'
	$(PY) tools/install_detectron2.py
	touch $(STAMP)

# Debian packages the tests drive: chromium (Playwright, never a downloaded browser build),
# Orthanc with its DICOMweb plugin (a real PACS on loopback), dicom3tools (dciodvfy) and Node
# with npm (dcmjs and OHIF, tools/node).
SYSTEM_PACKAGES := chromium orthanc orthanc-dicomweb dicom3tools nodejs npm
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	[ -x /usr/sbin/Orthanc ] || missing="$$missing orthanc"; \
	[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing="$$missing orthanc-dicomweb"; \
	command -v dciodvfy >/dev/null 2>&1 || missing="$$missing dicom3tools"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "missing Debian packages:$$missing (sudo apt-get install$$missing); their tests skip"; fi; \
	fi

# The field's own readers the export tests run beside dcmqi and nibabel (in .venv):
# dcmjs (OHIF's parser) from tools/node's package-lock, and dicompyler-core in a venv of its own
# (it needs pydicom 2; radseg has pydicom 3), pinned in tools/rt-reader/requirements.txt.
NODE_STAMP := tools/node/node_modules/.radseg-installed
RT_VENV := .venv-rt
RT_STAMP := $(RT_VENV)/.radseg-installed
node-deps: $(NODE_STAMP)
$(NODE_STAMP): tools/node/package.json tools/node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd tools/node && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error && touch .radseg-installed.tmp \
	  && mv .radseg-installed.tmp node_modules/.radseg-installed; \
	else echo "npm is missing (Debian packages nodejs npm); the dcmjs tests skip"; fi
rt-reader: $(RT_STAMP)
$(RT_STAMP): tools/rt-reader/requirements.txt
	$(PYTHON) -m venv $(RT_VENV)
	$(RT_VENV)/bin/python -m pip install --disable-pip-version-check -q -r tools/rt-reader/requirements.txt
	touch $(RT_STAMP)

# The prebuilt OHIF viewer (@ohif/app's dist/, no build) for tests/browser/test_ohif_browser.py:
# the npm tarball alone (its dependencies are bundled into dist/), checked against its sha512.
OHIF_VERSION := 3.13.2
OHIF_SHA512 := 5997719a9986eeba85816f5924b71b82bdd70ad2e2d4a0cd3e831a798e4f3deea3e06e1f8c48e393271933a0ba664d85f3b04ac457e9abe8dde715d907d13c10
OHIF_STAMP := tools/ohif/dist/.radseg-$(OHIF_VERSION)
ohif: $(OHIF_STAMP)
$(OHIF_STAMP):
	@if command -v npm >/dev/null 2>&1; then \
	  cd tools/ohif && rm -rf dist package ohif-app-*.tgz && \
	  npm pack --silent @ohif/app@$(OHIF_VERSION) >/dev/null && \
	  echo "$(OHIF_SHA512)  ohif-app-$(OHIF_VERSION).tgz" | sha512sum -c --quiet - && \
	  tar xzf ohif-app-$(OHIF_VERSION).tgz package/dist && mv package/dist dist && \
	  rm -rf package ohif-app-$(OHIF_VERSION).tgz && touch dist/.radseg-$(OHIF_VERSION); \
	else echo "npm is missing (Debian packages nodejs npm); the OHIF test skips"; fi

test: $(STAMP) system-deps node-deps rt-reader ohif
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
# Each records its goals' rows in BENCH_SUMMARY (tests/bench/summary.py); the table of all of
# them ends the output, and a benchmark that fails is a row of its own (and make fails).
BENCH ?= ingest jobs inference training web_load web_render web_pages viewer_tools quality review_priority predict_scale
BENCH_SUMMARY ?= bench-results/summary.jsonl
bench: $(STAMP) system-deps
	@mkdir -p $(dir $(BENCH_SUMMARY)); : > $(BENCH_SUMMARY); failed=""; \
	for b in $(BENCH); do \
	  if [ "$$b" = ingest ]; then mod=tests.bench; else mod=tests.bench.$$b; fi; \
	  echo "== $$mod"; \
	  RADSEG_BENCH_SUMMARY=$(BENCH_SUMMARY) $(PY) -m $$mod || failed="$$failed $$b"; done; \
	RADSEG_BENCH_SUMMARY=$(BENCH_SUMMARY) $(PY) -m tests.bench.summary $$failed

clean:
	rm -rf $(VENV) $(RT_VENV) tools/node/node_modules tools/ohif/dist .pytest_cache .mypy_cache .ruff_cache

demo-stop:
	-@for f in $(DEMO_HOME)/run/*.pid; do [ -f "$$f" ] && kill "$$(cat $$f)" 2>/dev/null; rm -f "$$f"; done; true
