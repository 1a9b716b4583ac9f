# Everything runs from a project-local virtualenv built from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test check lint bench clean package-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# tests/django_project runs in sessions of its own (pytest-django configures Django once per
# session), once per engine; PYTEST_ARGS narrows the main session only.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m pytest tests/django_project --ds=project.settings_pg
	$(BIN)/python -m pytest tests/django_project --ds=project.settings_sqlite

# The Django test project again on Django 6 (Python 3.12: Django 6 needs it), whose own
# django.tasks replaces the django-tasks backport the main virtualenv uses.
DJANGO6_PYTHON ?= $(shell pyenv root 2>/dev/null)/versions/3.12.1/bin/python
DJANGO6_VENV ?= .venv-django6
$(DJANGO6_VENV)/.installed: pyproject.toml
	$(DJANGO6_PYTHON) -m venv $(DJANGO6_VENV)
	$(DJANGO6_VENV)/bin/pip install -q --upgrade pip
	$(DJANGO6_VENV)/bin/pip install -q -e '.[test]' 'django>=6'
	touch $@

.PHONY: test-django6
test-django6: $(DJANGO6_VENV)/.installed
	$(DJANGO6_VENV)/bin/python -m pytest -p no:cacheprovider tests/django_project --ds=project.settings_pg
	$(DJANGO6_VENV)/bin/python -m pytest -p no:cacheprovider tests/django_project --ds=project.settings_sqlite

lint: $(STAMP)
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy

package-check: $(STAMP)
	DEV_PYTHON=$(abspath $(BIN))/python PYTHON=$(PYTHON) .ci/package-check

check: lint test

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# oban start --processes 1 against --processes 2 on CPU-bound jobs (bench/bench_processes.py).
.PHONY: bench-processes
bench-processes: $(STAMP)
	$(BIN)/python bench/bench_processes.py $(BENCH_ARGS)

# Tests against real Elixir Oban nodes (tests/interop, see docs/elixir.md): needs Erlang
# (/usr/bin/erl) and the Elixir kit (OBAN_ELIXIR_KIT, default ../shared/elixir/elixir-kit.tgz),
# so `make test` leaves them out; test_web.py also needs Debian's chromium (/usr/bin/chromium,
# which Playwright of the test extra drives: no `playwright install`, whose download cannot
# work here). pytest's timeout covers test bodies only: the first run's `mix compile` (30 to
# 55 s) happens in a fixture, with its own limit.
.PHONY: interop
interop: $(STAMP)
	$(BIN)/python -m pytest tests/interop -o timeout_func_only=true $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
