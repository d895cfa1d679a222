# The two commands of the README's quick start: `make demo` and `make test`.
# Each sets up whatever is missing first (Debian packages, .venv, the package).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test setup setup-test lint typecheck unit bench clean install key uninstall system-test

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

# `sudo make install`: the service (venv in /opt/appliance, unit, config, credential; asks
# for the API key without echoing it); `sudo make key` replaces the key. See
# scripts/install.sh. DESTDIR=/tmp/root stages the files without touching the system.
DESTDIR ?=
PREFIX ?= /opt/appliance
SYSCONFDIR ?= /etc/appliance
UNITDIR ?= /etc/systemd/system
INSTALL_ENV = DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" SYSCONFDIR="$(SYSCONFDIR)" UNITDIR="$(UNITDIR)"

install:
	$(INSTALL_ENV) scripts/install.sh install

key:
	$(INSTALL_ENV) scripts/install.sh key

uninstall:
	$(INSTALL_ENV) scripts/install.sh uninstall

# The install and the service under a real systemd (PID 1 of a Debian bookworm container),
# as root; see tests/system/systest.py. Needs debootstrap and systemd-container.
system-test:
	@command -v debootstrap >/dev/null && command -v systemd-nspawn >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends debootstrap systemd-container; }
	python3 tests/system/systest.py
