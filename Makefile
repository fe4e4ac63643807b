# The two quick-start commands: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Every `make test` prints the 30 slowest tests; the unit and integration tiers run on every core.
PYTEST_ARGS ?=
PYTEST_WORKERS ?= auto

.PHONY: all setup system-deps toolchain-check lab-tools lint typecheck test test-fast test-lab unit \
	demo demo-airgap lab-up lab-down fresh clean

all: test

# The venv installs only what requirements/dev.lock names, each file checked against its sha256
# (--require-hashes); the project itself goes in last, with no dependency resolution of its own.
# `lab/toolchain/refresh python` rewrites the lockfiles from pyproject.toml and constraints.txt.
$(VENV)/.installed: pyproject.toml constraints.txt requirements/dev.lock
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements/dev.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $@

setup: $(VENV)/.installed

system-deps:
	lab/system-deps

# The drift guard: every committed lockfile still names the pinned versions and still resolves
# (seconds, nothing compiled); a failure names the tool and `lab/toolchain/refresh TOOL`.
toolchain-check: system-deps
	lab/toolchain/check

lab-tools: system-deps toolchain-check
	lab/build

lint: setup
	$(VENV)/bin/ruff check installer tests bench stacks lab
	$(VENV)/bin/ruff format --check installer tests bench stacks lab
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/ansible-lint playbooks/

typecheck: setup
	$(VENV)/bin/mypy

unit: setup
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

# The static checks (lint, typecheck) beside the lab's two sites' lab/up, then two pytest
# sessions at once (scripts/test): the whole-site bootstrap, multi-cluster and nodes modules on the
# second site (LAB_SITE=b), every other test on the first in one pytest-xdist session in lanes
# (tests/conftest.py).
test: setup lab-tools
	PATH="$(abspath $(VENV))/bin:$$PATH" PYTEST_WORKERS=$(PYTEST_WORKERS) scripts/test $(PYTEST_ARGS)

demo: setup lab-tools
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo

# The air-gapped variant: a bundle from the lab's upstream, the upstream switched off, bootstrap.
demo-airgap: setup lab-tools
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo-airgap

lab-up: setup lab-tools
	lab/up

lab-down:
	lab/down

# The fresh-machine rehearsal: both quick-start commands with an empty cache, state and venv of
# their own (nothing of ~/.cache/onprem-installer is reused), each step timed (scripts/fresh).
fresh:
	bash scripts/fresh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
