# Two entry points: `make demo` runs the main job, `make test` runs the tests.
# Each builds .venv first. torch is pinned before the project is installed: on a CPU-only
# machine with a local wheel that pin resolves offline in seconds; elsewhere it is PyPI's
# default build (CUDA on Linux x86_64). Another build: make TORCH="torch==2.13.0+cu130" ...
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test lint clean

$(BIN)/vidtag: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

demo: $(BIN)/vidtag
	HF_HUB_OFFLINE=1 $(BIN)/python -m tagger.demo

test: $(BIN)/vidtag
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

lint: $(BIN)/vidtag
	$(BIN)/ruff check tagger tests
	$(BIN)/mypy tagger

clean:
	rm -rf $(VENV) demo-output
