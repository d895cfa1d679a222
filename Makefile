# The two commands of the README's quick start: `make demo` and `make test`.
# Each sets up whatever is missing first (Debian packages, .venv, the package).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test setup setup-test lint typecheck unit bench clean install uninstall

setup:
	scripts/setup.sh run

setup-test:
	scripts/setup.sh test

demo: setup
	$(VENV)/bin/appliance demo

test: setup-test
	$(VENV)/bin/ruff check appliance realtime_sim tests bench
	$(VENV)/bin/mypy
	PYTHONASYNCIODEBUG=1 $(PY) -m pytest -q

bench: setup-test
	$(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache

# `sudo make install`: the service (venv in /opt/appliance, unit, config, credential); see
# scripts/install.sh. DESTDIR=/tmp/root stages the files without touching the system.
DESTDIR ?=
PREFIX ?= /opt/appliance
SYSCONFDIR ?= /etc/appliance
UNITDIR ?= /etc/systemd/system
INSTALL_ENV = DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" SYSCONFDIR="$(SYSCONFDIR)" UNITDIR="$(UNITDIR)"

install:
	$(INSTALL_ENV) scripts/install.sh install

uninstall:
	$(INSTALL_ENV) scripts/install.sh uninstall
