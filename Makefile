# The two set-up commands: `make run` and `make test`. Nothing else is installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench screenshots clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## make run: install, start ValetKey on SQLite in ./.valetkey, run the demo, keep serving
run: $(BIN)/.installed
	scripts/run.sh

## make test: install PostgreSQL if missing, lint, type-check, run the suite on SQLite and PostgreSQL
test: $(BIN)/.installed
	scripts/test.sh

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

## make bench: token issuance, token exchange, decisions, the gateways and the console's audit page against a live server (see docs/performance.md)
bench: $(BIN)/.installed
	$(BIN)/python bench/token_issuance.py
	$(BIN)/python bench/token_exchange.py
	$(BIN)/python bench/decisions.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/mcp.py
	$(BIN)/python bench/audit_console.py

## make screenshots: refresh docs/images/ from the console's Chromium tests (after make test)
screenshots: $(BIN)/.installed
	VALETKEY_UPDATE_SCREENSHOTS=1 $(BIN)/pytest -q -p no:cacheprovider tests/e2e/test_console_pages.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
