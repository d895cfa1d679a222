# The two commands of the README's quick start: `make demo` and `make test`.
# Each sets up whatever is missing first (Debian packages, .venv, the package).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test setup setup-test lint typecheck unit bench clean

setup:
	scripts/setup.sh run

setup-test:
	scripts/setup.sh test

demo: setup
	$(VENV)/bin/appliance demo

test: setup-test
	$(VENV)/bin/ruff check appliance tests bench
	$(VENV)/bin/mypy
	PYTHONASYNCIODEBUG=1 $(PY) -m pytest -q

bench: setup-test
	$(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache
