# The two commands of the README: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; on a GPU machine: make demo TORCH="torch==2.13.0 --index-url ..." or any CUDA build.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test clean-cache

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,ray]"
	touch $@

demo: setup
	$(BIN)/codecl run configs/default.yaml

test: setup
	$(BIN)/python -m pytest -q

clean-cache:
	rm -rf "$${CODECL_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/codecl}"
