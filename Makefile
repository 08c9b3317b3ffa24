# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed-stamp
# dvc stages call `meterid`: the venv's commands come first on PATH for every target
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install demo dashboard serve test test-quick bench lint clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

## demo: train on the demo data (generated if missing), score demo URLs served from 127.0.0.1,
## then push what the flows versioned with DVC (each flow records its stages in dvc.lock)
demo: install
	$(BIN)/meterid flow demo
	$(BIN)/dvc push --quiet
	$(BIN)/dvc metrics show
	$(BIN)/meterid models
	@echo "demo done. Look at: reports/validation/data_docs/index.html, reports/split/class_balance.png,"
	@echo "reports/evaluation/confusion_matrix.png, reports/evaluation/audit.csv; models/champion;"
	@echo "reports/scoring/demo.parquet (UNKNOWN photos kept in data/unknown_store);"
	@echo "reports/clusters/<date>/: clusters.png, sheets/, summary.csv (candidates: meterid candidates --help)"
	@echo "MLflow: .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow/mlflow.db --host 127.0.0.1"
	@echo "Review what the model was unsure of: make dashboard (opens on Review, http://127.0.0.1:8501)"

## test: the whole suite (unit and integration tests of the real tools on generated data)
test: install
	$(BIN)/pytest

## test-quick: unit tests only
test-quick: install
	$(BIN)/pytest -m "not slow"

## dashboard: Streamlit on http://127.0.0.1:8501 (after `make demo`)
dashboard: install
	$(BIN)/meterid dashboard

## serve: the production stack on 127.0.0.1: Prefect server + UI (:4200), MLflow server + UI
## (:5000), a worker and prefect.yaml's deployments; Ctrl-C stops it
serve: install
	$(BIN)/meterid serve

## bench: benchmarks/ (data, training, scoring and clustering figures, side by side)
bench: install
	$(BIN)/python -m benchmarks

## lint: ruff on the code, the tests and the benchmarks; mypy on meterid and the benchmarks
## (CI runs it before the tests)
lint: install
	$(BIN)/ruff check meterid tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf .prefect reports dvc-storage data/manifest.csv data/splits.csv
