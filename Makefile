# torchgeo-macl developer commands. Every target creates its virtual environment
# when it is missing, so a fresh clone needs only Python, pip (and pyenv for 3.12).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
VENV_LATEST ?= .venv-latest
REQ_MIN := requirements/py311-torchgeo-0.8.txt
REQ_LATEST := requirements/py312-torchgeo-latest.txt
DEMO_OUT ?= outputs/demo
DOCS_OUT ?= docs/_build/html
PIP_FLAGS ?= --quiet --disable-pip-version-check

# Python 3.12: `python3.12` when it runs, else the newest 3.12 that pyenv knows.
define find_python312
if command -v python3.12 >/dev/null 2>&1 && python3.12 -c 'import sys' >/dev/null 2>&1; then \
  command -v python3.12; \
elif command -v pyenv >/dev/null 2>&1 && v=$$(pyenv versions --bare | grep -E '^3\.12(\.[0-9]+)?$$' | sort -V | tail -n 1) && [ -n "$$v" ]; then \
  echo "$$(pyenv prefix $$v)/bin/python3.12"; \
else \
  echo 'error: Python 3.12 not found (neither python3.12 nor pyenv with a 3.12 version)' >&2; exit 1; \
fi
endef

.PHONY: help install demo test test-latest docs lint typecheck pytest clean

help:
	@echo 'make demo         install into $(VENV) and run the demo (synthetic archive, MACL vs SupCon)'
	@echo 'make test         install into $(VENV) (Python 3.11, torchgeo 0.8.1); ruff, mypy, pytest'
	@echo 'make test-latest  the same suite in $(VENV_LATEST) (Python 3.12, newest torchgeo)'
	@echo 'make docs         install the docs extras into $(VENV); build the HTML site into $(DOCS_OUT)'

$(VENV)/.installed: pyproject.toml $(REQ_MIN)
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) -r $(REQ_MIN)
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) -c $(REQ_MIN) -e '.[dev]'
	@touch $@

$(VENV_LATEST)/.installed: pyproject.toml $(REQ_LATEST)
	@test -x $(VENV_LATEST)/bin/python || { py=$$($(find_python312)); echo "using $$py"; "$$py" -m venv $(VENV_LATEST); }
	$(VENV_LATEST)/bin/python -m pip install $(PIP_FLAGS) -r $(REQ_LATEST)
	$(VENV_LATEST)/bin/python -m pip install $(PIP_FLAGS) -c $(REQ_LATEST) -e '.[dev]'
	@touch $@

$(VENV)/.installed-docs: $(VENV)/.installed
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) -c $(REQ_MIN) -e '.[docs]'
	@touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/torchgeo-macl demo --out $(DEMO_OUT)

define run_suite
	$(1)/bin/python -c 'import sys, torch, torchgeo; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}, torchgeo {torchgeo.__version__}")'
	$(1)/bin/ruff check .
	$(1)/bin/ruff format --check .
	$(1)/bin/mypy
	$(1)/bin/python -m pytest -q
endef

test: $(VENV)/.installed
	$(call run_suite,$(VENV))

test-latest: $(VENV_LATEST)/.installed
	$(call run_suite,$(VENV_LATEST))

# warnings are errors; the build reads nothing from the network
docs: $(VENV)/.installed-docs
	$(VENV)/bin/python -m sphinx -W --keep-going -b html docs $(DOCS_OUT)

clean:
	rm -rf $(VENV) $(VENV_LATEST) .mypy_cache .ruff_cache .pytest_cache outputs docs/_build
