# tidelog developer commands. Everything runs from a project-local virtualenv (.venv),
# created on first use, so a fresh machine needs nothing but Python 3.11+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint format fuzz soak run bench-codec bench-storage bench-groups clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check tidelog tests bench
	$(BIN)/ruff format --check tidelog tests bench
	$(BIN)/mypy tidelog

format: $(STAMP)
	$(BIN)/ruff format tidelog tests bench
	$(BIN)/ruff check --fix tidelog tests bench

# A longer fuzz run of the frame decoder and the batch reader (make test runs 100,000 inputs).
fuzz: $(STAMP)
	TIDELOG_FUZZ_INPUTS=2000000 $(BIN)/pytest tests/unit/test_fuzz.py -q

# Hundreds of SIGKILL crash rounds against the log (make test runs 20).
soak: $(STAMP)
	TIDELOG_SOAK_ROUNDS=300 $(BIN)/pytest tests/system/test_log_crash.py -q

# Starts a broker on 127.0.0.1:7070 with its data in ./tidelog-data (Ctrl-C stops it).
run: $(STAMP)
	$(BIN)/tidelog serve

bench-codec: $(STAMP)
	$(BIN)/python bench/codec.py

bench-storage: $(STAMP)
	$(BIN)/python bench/storage.py

bench-groups: $(STAMP)
	$(BIN)/python bench/groups.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
