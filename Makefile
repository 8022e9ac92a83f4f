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

# A local Prefect server (127.0.0.1:4200, SQLite under artifacts/prefect), the config's deployments
# served, one run of extract-and-train/<name> waited for; the server stays up (`make stop`).
demo: setup
	$(BIN)/python -m flows.server demo $(CONFIG)

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/python -m pytest -q

stop:
	$(BIN)/python -m flows.server stop

clean:
	rm -rf artifacts/* $(VENV)
