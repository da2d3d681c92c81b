# kimi-bridge: `make demo` shows it working, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: test demo venv clean bench soak

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

demo: $(VENV)/.installed
	$(PY) -m tests.demo

bench: $(VENV)/.installed
	$(PY) -m bench.run

soak: $(VENV)/.installed
	$(PY) -m bench.soak

clean:
	rm -rf $(VENV) .pytest_cache
