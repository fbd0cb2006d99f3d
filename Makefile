# fleetpatch: `make demo` runs the main job, `make test` runs every check.
# Both set up everything on a fresh Debian/Ubuntu machine: the Debian
# packages the tests need (as root), a .venv, the project and its dev tools.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PROTOS := $(wildcard proto/fleetpatch/v1/*.proto)
# Debian packages the test suites use: dpkg-repack (the agent keeps a copy of
# what it replaces with it), dpkg-dev (dpkg-scanpackages for the
# local apt repositories), iproute2 (network namespaces), util-linux
# (unshare), rpm, createrepo-c, dnf, dnf-plugins-core (the dnf backend, tested
# against real dnf in a sandbox), systemd (systemd-analyze verify/security of the
# unit files), systemd-container (systemd-nspawn boots the packaged services
# under a real systemd), shellcheck (lints the maintainer scripts), prometheus
# (a real Prometheus scrapes a real controller in the tests; its promtool checks
# and unit-tests the alert rules in packaging/prometheus), lintian (the built
# .debs are held lintian-clean but for packaging/debian/*/lintian-overrides),
# postgresql (the store's contract tests and the controller's integration
# tests run against a real PostgreSQL cluster made in a temp dir; libpq5 is
# what psycopg loads), gcc, libpq-dev and python3-dev (to compile psycopg's C
# implementation, pyproject.toml's `c` extra, against that libpq5).
DEB_PACKAGES := dpkg-dev dpkg-repack iproute2 util-linux rpm createrepo-c dnf dnf-plugins-core \
	systemd systemd-container shellcheck prometheus lintian postgresql libpq5 \
	gcc libpq-dev python3-dev

export PYTHONDONTWRITEBYTECODE := 1

.PHONY: all test demo lint typecheck unit proto deps debian-deps clean packages

all: test

# The Debian packages first (order only): the `c` extra compiles against
# libpq-dev. Where it cannot be built (not root, no compiler), psycopg runs
# its pure-Python implementation, slower but the same to the tests.
$(STAMP): pyproject.toml | debian-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,c]' || { \
	  echo "psycopg's C implementation could not be built: the PostgreSQL store runs on the pure-Python one"; \
	  $(PY) -m pip install --quiet -e '.[dev]'; }
	touch $@

deps: $(STAMP) debian-deps

# Installs what is missing, only when we are root (CI and a fresh machine);
# otherwise says what is missing and goes on (those tests skip with a reason).
debian-deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${db:Status-Abbrev}' $$p 2>/dev/null | grep -q '^ii' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "not root: cannot install$$missing (tests that need them will skip)"; fi; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit -q

# pytest-xdist workers for `make test`. The suite waits on processes, servers,
# sandboxes and containers more than it computes: two workers on a 2-core
# machine took it from 25 to 14 minutes (same day, same machine). Each test file runs whole on one
# worker (--dist loadfile): a module's fixtures are made once. Each worker
# has its own block of ports (tests/support/controller.py). `make test
# TEST_WORKERS=auto` takes one per core; 0 runs the tests in one process.
TEST_WORKERS ?= 2

test: deps lint typecheck
	FLEETPATCH_STRICT_SKIPS=1 $(VENV)/bin/pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile

# Regenerate the wire code from proto/; a test fails when it is stale.
proto: $(STAMP)
	cd proto && PATH="$(abspath $(VENV))/bin:$$PATH" ../$(PY) -m grpc_tools.protoc -I. \
	  --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. \
	  $(patsubst proto/%,%,$(PROTOS))

demo: deps
	$(PY) examples/demo.py

# Debian packages of the agent and the controller, and the agent's RPM (rpmbuild), into
# dist/ (packaging/README.md). Signed when FLEETPATCH_RELEASE_KEY names a release private key
# (`fleetpatch release keygen`). Keep that key outside the tree and never in dist/, which is
# what gets published.
packages: $(STAMP)
	$(PY) packaging/build_debs.py --out dist --rpm $(if $(FLEETPATCH_RELEASE_KEY),--key "$(FLEETPATCH_RELEASE_KEY)")

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
