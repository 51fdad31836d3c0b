# `make run`: the whole site with embedded defaults (SQLite, filesystem broker, a real
# Celery worker and beat). `make test`: the test suite.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

# The dev server runs with DEBUG on (no SECRET_KEY needed); tests use their own settings.
migrate run superuser: export DEBUG ?= 1

.PHONY: run test test-fast lint install migrate superuser bench-import clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip "setuptools<81" wheel

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

migrate: install
	$(BIN)/python manage.py migrate --noinput

run: migrate
	PATH=$(CURDIR)/$(BIN):$$PATH PORT=$(PORT) $(BIN)/honcho -f Procfile.dev start

# Non-interactive when DJANGO_SUPERUSER_USERNAME (and _PASSWORD, _EMAIL) are set.
superuser: migrate
	$(BIN)/python manage.py createsuperuser $(if $(DJANGO_SUPERUSER_USERNAME),--noinput)

test: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest

# The quick loop while editing: no browser, no worker process, nothing marked slow.
test-fast: install
	$(BIN)/pytest -m "not slow and not browser and not worker"

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf var .pytest_cache
