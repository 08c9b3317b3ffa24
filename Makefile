# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed-stamp

.PHONY: install demo test test-quick bench lint clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

## demo: generate the demo meter dataset (if missing), validate, split (Prefect flow), version it (DVC)
demo: install
	$(BIN)/meterid flow data
	$(BIN)/dvc commit --force --quiet data.dvc
	$(BIN)/dvc repro
	$(BIN)/dvc push --quiet
	@echo "demo done: data in data/raw, manifest data/manifest.csv, splits data/splits.csv,"
	@echo "validation report reports/validation/data_docs/index.html, class balance reports/split/class_balance.png"

## test: the whole suite (unit and integration tests of the real tools on generated data)
test: install
	$(BIN)/pytest

## test-quick: unit tests only
test-quick: install
	$(BIN)/pytest -m "not slow"

## bench: benchmarks/ (difficulty baseline, generator throughput)
bench: install
	$(BIN)/python -m benchmarks

lint: install
	$(BIN)/ruff check meterid tasks flows tests benchmarks

clean:
	rm -rf .prefect reports dvc-storage data/manifest.csv data/splits.csv
