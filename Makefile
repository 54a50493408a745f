# miometry.pg_backup: build and test entry points.
#   make deps   Debian packages (PostgreSQL, gnupg, zstd, python3-venv), installed only if missing
#   make venv   .venv from /usr/bin/python3 with requirements/ansible.txt (which includes test.txt),
#               the agent (editable) and the collections of requirements/collections.txt
#   make test   every test suite; exits non-zero if any fails (pytest's "no tests collected",
#               exit 5, counts as a failure too: nothing here ignores an exit code)
#   make demo   backup, list, verify and restore of a demo cluster (scripts/demo.sh)
#   make bench  benchmarks with comparison tables (bench/README.md); not part of make test
#   make clean  remove the venv, stamps and build/test leftovers

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
# Each recipe is one bash script: a failing line fails the target.
.ONESHELL:
.DEFAULT_GOAL := test

# The venv must be built from Debian's interpreter: PostgreSQL (archive_command), cron and the
# tests run the agent as the postgres user, who cannot execute a pyenv Python under /root.
BASE_PYTHON ?= /usr/bin/python3
VENV        := .venv
PY          := $(VENV)/bin/python
VENV_STAMP  := $(VENV)/.make-venv-stamp
PIP         := $(PY) -m pip --disable-pip-version-check --no-input
PYTEST      := $(PY) -m pytest -q -p no:cacheprovider
# Run as root (CI), clusters and the agent run as this OS user.
PG_OS_USER  ?= postgres

.PHONY: deps venv test demo bench clean check-postgres-access ansible-test molecule

deps:
	bash scripts/install-deps.sh

venv: deps $(VENV_STAMP) check-postgres-access

# Rebuilt only when the requirements or the agent's packaging change.
$(VENV_STAMP): requirements/agent.txt requirements/test.txt requirements/ansible.txt requirements/collections.txt agent/pyproject.toml | deps
	@umask 022
	want=$$($(BASE_PYTHON) -c 'import sys; print(sys.base_prefix)')
	if [ -x $(PY) ] && [ "$$($(PY) -c 'import sys; print(sys.base_prefix)' 2>/dev/null)" = "$$want" ]; then
	    echo "venv: reusing $(VENV) ($$want)"
	else
	    echo "venv: creating $(VENV) from $(BASE_PYTHON)"
	    rm -rf $(VENV)
	    $(BASE_PYTHON) -m venv $(VENV)
	fi
	$(PIP) install -q -r requirements/ansible.txt
	$(PIP) install -q -e ./agent
	# galaxy.yml's collection dependencies, extracted from the pinned ansible wheel into $(VENV)/collections.
	bash scripts/install-collections.sh $(VENV)
	touch $@

# galaxy-importer pins conflict with the collection tooling (attrs): it gets a venv of its own.
GALAXY_VENV_STAMP := .venv-galaxy/.make-venv-stamp
$(GALAXY_VENV_STAMP): requirements/galaxy.txt | deps
	@umask 022
	$(BASE_PYTHON) -m venv .venv-galaxy
	.venv-galaxy/bin/pip install -q --disable-pip-version-check --no-input -r requirements/galaxy.txt
	touch $@

# The postgres user must reach the venv's interpreter and the agent's sources through every
# parent directory of this checkout.
check-postgres-access: $(VENV_STAMP)
	@umask 022
	# Byte-compile the editable agent: the postgres user cannot write __pycache__ here and would
	# otherwise compile every module on every run (~50 ms per call; pip does this for real installs).
	$(PY) -m compileall -q agent/src >/dev/null
	if [ "$$(id -u)" -ne 0 ]; then exit 0; fi
	if ! id -u $(PG_OS_USER) >/dev/null 2>&1; then
	    echo "error: OS user $(PG_OS_USER) does not exist (install postgresql: make deps)" >&2; exit 1
	fi
	dir=$(CURDIR)
	while :; do
	    if ! runuser -u $(PG_OS_USER) -- test -x "$$dir"; then
	        echo "error: the $(PG_OS_USER) user cannot traverse $$dir, so it cannot run $(CURDIR)/$(VENV)/bin/pg-backup." >&2
	        echo "       Fix: chmod o+x $$dir (or check out the repository somewhere world-traversable, e.g. /srv)." >&2
	        exit 1
	    fi
	    [ "$$dir" = / ] && break
	    dir=$$(dirname "$$dir")
	done
	if ! runuser -u $(PG_OS_USER) -- $(CURDIR)/$(PY) -c 'import pg_backup, yaml, zstandard, psycopg' >/dev/null; then
	    echo "error: the $(PG_OS_USER) user cannot run $(CURDIR)/$(PY) or import the agent:" >&2
	    runuser -u $(PG_OS_USER) -- $(CURDIR)/$(PY) -c 'import pg_backup, yaml, zstandard, psycopg' >&2 || true
	    echo "       Check the modes of $(CURDIR)/$(VENV) and $(CURDIR)/agent/src (make clean venv rebuilds with umask 022)." >&2
	    exit 1
	fi

# Test suites; make stops at the first step that fails (scripts/parallel.sh fails when any of its suites does).
test: deps venv $(GALAXY_VENV_STAMP)
	# Four workers: most of a test is waiting on PostgreSQL, gpg, the S3 endpoint or an outage (CI has 2 cores).
	# --durations: the slowest tests in the log, to keep CI under its 25-minute budget. The slowest ones run
	# first (SLOW_FIRST in agent/tests/conftest.py: update it from this list) so none is left at the tail.
	$(PYTEST) -n 4 --durations=15 agent/tests
	# The static gates (short CPU bursts) run beside the collection's pytest (mostly waiting on playbooks and
	# moto), each one's output kept whole in build/test-logs/ and printed after; any failure fails the target.
	# The collection's pytest uses two xdist workers: its tests share nothing (tmp_path, free ports, a moto
	# server per module); 6 min sequential, about 3.5 min with -n 2 beside the gates.
	# Shared set-up first, once: the collection dependencies they all read (rsync/shellcheck come from deps).
	bash scripts/install-collections.sh $(VENV)
	bash scripts/parallel.sh build/test-logs \
	    collection-pytest '$(PYTEST) -n 2 --durations=5 tests/roles tests/integration_moto' \
	    ansible-test 'bash scripts/ansible-test.sh' \
	    ansible-lint 'bash scripts/lint.sh' \
	    galaxy-importer 'bash scripts/galaxy-import.sh'
	VENV=$(CURDIR)/$(VENV) bash scripts/molecule.sh

demo: deps venv
	bash scripts/demo.sh

ansible-test: deps venv
	bash scripts/ansible-test.sh

molecule: deps venv
	VENV=$(CURDIR)/$(VENV) bash scripts/molecule.sh

# Benchmarks print comparison tables; they are not tests (see bench/README.md). BENCH_ARGS=--quick,
# BENCH="wal physical" runs only those. Baselines (pgBackRest) come from Debian packages.
BENCH ?= logical wal physical drill
bench: deps venv
	bash scripts/install-deps.sh pgbackrest
	for b in $(BENCH); do
	    [ -f bench/bench_$$b.py ] || { echo "bench: no bench/bench_$$b.py" >&2; exit 1; }
	    $(PY) bench/bench_$$b.py --agent $(CURDIR)/$(VENV)/bin/pg-backup $(BENCH_ARGS)
	done

clean:
	rm -rf $(VENV) .venv-galaxy build dist tests/output .pytest_cache agent/build agent/dist
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -prune -exec rm -rf {} +
	rm -f .make-*stamp
