# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Find a Python >= 3.12. pyenv shims named python3.12 exist but fail unless that version is
# selected, so each candidate is asked to run; PYENV_VERSION lets the shim pick 3.12.x.
FIND_PYTHON := for c in "$$PYTHON" python3.12 python3.13 python3; do \
    [ -n "$$c" ] || continue; \
    for v in "" $$(ls -d "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/3.1[2-9]* 2>/dev/null | xargs -rn1 basename); do \
      if PYENV_VERSION=$$v $$c -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
        echo "PYENV_VERSION=$$v $$c"; exit 0; fi; \
    done; \
  done; echo "no Python >= 3.12 found: install python3.12 or set PYTHON=/path/to/python3.12" >&2; exit 1

.PHONY: demo test test-slow results venv clean

$(VENV)/.installed: pyproject.toml
	@py="$$($(FIND_PYTHON))" || exit 1; \
	  echo "creating $(VENV) with: $$py"; \
	  [ -x $(PY) ] || env $$py -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

# A fresh run each time (the same workdir would otherwise resume from its checkpoints):
# DEMO_DIR is removed first; `make demo DEMO_DIR=runs/demo` puts it elsewhere.
DEMO_DIR ?= /tmp/gkt_jax_demo
demo: venv
	@[ -n "$(DEMO_DIR)" ] && [ "$(DEMO_DIR)" != / ] || { echo "DEMO_DIR must name a directory" >&2; exit 2; }
	@echo "make demo: a fresh run in $(DEMO_DIR) (removed first; make demo DEMO_DIR=... to choose)"
	rm -rf "$(DEMO_DIR)"
	$(PY) -m experiments.main --config experiments/configs/digits.py:method=gkt --workdir "$(DEMO_DIR)"

test: venv
	$(PY) -m pytest -q -n 2 -m "not slow"

test-slow: venv
	$(PY) -m pytest -q -m slow

# Issue 7's results suite (hours on 2 CPU cores; resumes where it stopped): docs/results/.
results: venv
	$(PY) -m experiments.reproduce --suite fmnist

clean:
	rm -rf $(VENV) .jax_test_cache
