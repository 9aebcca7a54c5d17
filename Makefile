# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS := examples,plots,highs
# The tests also compile for GPU targets (compile-only: the CUDA plugin, no GPU).
TEST_EXTRAS := $(EXTRAS),test,gpu

.PHONY: demo test test-slow benchmark clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[$(TEST_EXTRAS)]"
	touch $@

demo: $(VENV)/.installed
	$(PY) -m olla_jax demo

test: $(VENV)/.installed-test
	$(PY) -m pytest -q

test-slow: $(VENV)/.installed-test
	$(PY) -m pytest -q -m slow

benchmark: $(VENV)/.installed
	$(PY) -m benchmarks.suite

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
