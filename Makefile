# The two commands of the README: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; on a GPU machine: make demo TORCH="torch==2.13.0 --index-url ..." or any CUDA build.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

# apt-get needs root: sudo where we are not.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: setup browser demo test clean-cache

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,ray,tensorboard,mlflow]"
	touch $@

demo: setup
	$(BIN)/codecl run configs/default.yaml

# The report's page tests open it in a headless Chromium: Debian's package, installed when missing. Where it
# cannot be, those tests skip and say why.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends chromium; } || \
	  echo "no Chromium could be installed: the report's page tests will skip"

test: setup browser
	$(BIN)/python -m pytest -q

clean-cache:
	rm -rf "$${CODECL_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/codecl}"
