# Two commands for a fresh machine (Python 3.11):
#   make demo   set up .venv and run the whole system on embedded defaults
#   make test   set up .venv and run the test suite (starts its own servers)
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-fast clean

$(BIN)/star: pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, exactly 2.13.0: the CPU wheel (a looser request may pull a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	@touch $(BIN)/star

setup: $(BIN)/star

demo: setup
	$(BIN)/star demo

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not network"

clean:
	rm -rf $(VENV) star-lake .pytest_cache
