# iaa-eval: `make run` (install + forgetting suite on the embedded mini-world), `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
TORCH   := torch==2.13.0
STAMP   := $(VENV)/.installed

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/iaa-eval run --suite forgetting --run-id miniworld
	$(BIN)/iaa-eval report runs/miniworld
	$(BIN)/iaa-eval gate runs/miniworld --thresholds iaa_eval/data/baselines/gate.yaml

test: $(STAMP)
	$(BIN)/ruff check iaa_eval tests bench
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check iaa_eval tests bench
	$(BIN)/ruff format --check iaa_eval tests bench

bench: $(STAMP)
	$(BIN)/python bench/mmlu_cpu.py
	$(BIN)/python bench/miniworld_cpu.py --out bench/results/miniworld_cpu.json

clean:
	rm -rf $(VENV) .pytest_cache
