# Two commands on a fresh machine: `make demo` and `make test`.
# torch 2.13.0 is installed first, from the CPU wheel on local disk, so that pip never
# resolves a plain `torch` requirement to a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint install browser clean fuzz

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/gatelab demo --out runs/demo

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The report's browser test needs Debian's chromium; install it where we can (root + apt),
# else the test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium could not be installed: the browser test will skip"

test: $(VENV)/.installed browser
	$(PY) -m ruff check .
	$(PY) -m pytest

# A long fuzzing campaign (random seeds; GATELAB_FUZZ_EXAMPLES cases per entry point).
fuzz: $(VENV)/.installed
	GATELAB_FUZZ=1 $(PY) -m pytest -q -p no:cacheprovider tests/nn/test_fuzz.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info
