# Two commands matter: `make run` (serve on embedded SQLite + local blobs) and `make test`.
# Everything they need is installed here, into .venv, from the package registry.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test fuzz lint typecheck unit bench clean migrate java

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "fieldsync needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# Enketo's XPath evaluator for tests/oracle, from the npm registry; without npm (or when the
# install fails) the Enketo oracle test is skipped and says why.
ENKETO := tests/oracle/enketo
$(ENKETO)/node_modules/.installed: $(ENKETO)/package.json $(ENKETO)/package-lock.json
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "npm not found: the Enketo oracle will be skipped"; \
	elif npm ci --prefix $(ENKETO); then \
		touch $@; \
	else \
		echo "npm ci failed: the Enketo oracle will be skipped"; \
	fi

run: $(VENV)/.installed
	$(BIN)/fieldsync serve

migrate: $(VENV)/.installed
	$(BIN)/fieldsync migrate

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

# ODK Validate (JavaRosa, as ODK Collect loads a form) runs on every programme and test form,
# and tests/oracle compiles a small harness against JavaRosa: Debian's JDK if javac is missing.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
java:
	@command -v javac >/dev/null 2>&1 || { \
		echo "installing default-jdk-headless: ODK Validate and the JavaRosa oracle need Java"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends default-jdk-headless; }

# The suite includes tests/integration/test_fuzz.py: schemathesis against the OpenAPI schema,
# on SQLite and PostgreSQL, about 25 s each (it prints its cases and checks).
test: $(VENV)/.installed-test $(ENKETO)/node_modules/.installed java lint typecheck
	$(BIN)/python -m pytest

# A longer schemathesis run; FUZZ_SEED=n explores other cases.
FUZZ_EXAMPLES ?= 60
FUZZ_SEED ?= 0
fuzz: $(VENV)/.installed-test
	FIELDSYNC_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FIELDSYNC_FUZZ_SEED=$(FUZZ_SEED) \
		$(BIN)/python -m pytest -m fuzz -p no:cacheprovider tests/integration/test_fuzz.py

bench: $(VENV)/.installed-test
	@echo "benchmarks: see bench/README.md"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis $(ENKETO)/node_modules
