# Everything runs from the project's own files: `make demo` and `make test` set up .venv first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR):$(CURDIR)/layers/explain_core/src
export SAM_CLI_TELEMETRY := 0
DEMO_ARGS ?=
API_ARGS ?=
SANITY_ARGS ?=

.PHONY: openapi docs setup browser demo local-api test test-unit test-functional test-quality test-e2e images container-figures lint bench localisation sanity clean

setup: $(VENV)/.installed

FUNCTION_REQUIREMENTS := $(wildcard functions/*/requirements.txt)

$(VENV)/.installed: layers/requirements-ml.txt layers/requirements-aws.txt layers/requirements-nodeps.txt requirements-dev.txt layers/explain_core/pyproject.toml $(FUNCTION_REQUIREMENTS)
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r layers/requirements-ml.txt -r layers/requirements-aws.txt $(addprefix -r ,$(FUNCTION_REQUIREMENTS))
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@# xplique declares tensorflow[and-cuda]: installed without its declared dependencies, and last,
	@# because every later pip install that resolves dependencies checks the whole environment and
	@# reports xplique's undeclared-on-purpose requirement as an ERROR (the --no-deps steps do not).
	$(PY) -m pip install --quiet --no-deps -r layers/requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps -e layers/explain_core
	touch $@

browser:  ## Debian's chromium for the browser tests (devtools/browser.py), when missing
	bash devtools/chromium.sh

demo: setup  ## the main job on the local emulator (add DEMO_ARGS=--once to stop after the samples)
	$(PY) -m devtools.demo $(DEMO_ARGS)

test: setup lint browser  ## every test tier: unit, functional, quality, then e2e through Docker and SAM
	$(PY) -m pytest -ra

test-unit: setup
	$(PY) -m pytest -ra tests/unit

test-functional: setup browser
	$(PY) -m pytest -ra tests/functional

test-quality: setup
	$(PY) -m pytest -ra tests/quality

test-e2e: setup  ## starts the Docker engine, builds the base stand-in and the images, runs them with SAM
	$(PY) -m pytest -ra -m e2e tests/e2e

images: setup  ## Docker engine, Lambda base stand-in, sam build
	$(PY) -m devtools.containers build

local-api: setup  ## the REST API on 127.0.0.1:3000 through sam local start-api (API_ARGS=--port N); Ctrl-C stops it
	$(PY) -m devtools.local_api $(API_ARGS)

container-figures: setup  ## image sizes, cold/warm durations (the README's table)
	$(PY) -m devtools.containers figures

lint: setup
	$(VENV)/bin/ruff check layers functions devtools tests
	AWS_DEFAULT_REGION=us-east-1 $(VENV)/bin/sam validate --lint

openapi: setup  ## regenerate openapi.json from the API's pydantic models and routes
	$(PY) -m devtools.openapi

docs: setup  ## regenerate the method tables of README.md and docs/methods.md from the registry
	$(PY) -m devtools.docs

bench: setup  ## the benchmark table (not a test)
	$(PY) -m devtools.benchmark $(BENCH_ARGS)

localisation: setup  ## how much of each method's heatmap falls on the object
	$(PY) -m devtools.localisation

sanity: setup  ## sanity checks (Adebayo et al. 2018) of a family's methods on the demo model (SANITY_ARGS=--family perturbation)
	$(PY) -m devtools.sanity $(SANITY_ARGS)

clean:
	rm -rf .cache local-results benchmark-results .pytest_cache test-artifacts
