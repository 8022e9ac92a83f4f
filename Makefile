# Two commands for a newcomer: `make demo` and `make test`. Both set up .venv first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch that lies on these machines; a bare "torch" pulls a multi-GB CUDA build.
# Override on a GPU machine, e.g. `make setup TORCH=torch`.
TORCH ?= torch==2.13.0
CONFIG ?= configs/movielens.toml

export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME := $(CURDIR)/artifacts/prefect
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test lint stop clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/python -m pipeline demo --config $(CONFIG)

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/python -m pytest -q

stop:
	-$(BIN)/python -m flows.server stop 2>/dev/null || true

clean:
	rm -rf artifacts/* $(VENV)
