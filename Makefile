# The two quick-start commands: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: all setup system-deps lab-tools lint typecheck test unit demo demo-airgap lab-up lab-down clean

all: test

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==25.3
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

system-deps:
	lab/system-deps

lab-tools: system-deps
	lab/build

lint: setup
	$(VENV)/bin/ruff check installer tests bench stacks lab
	$(VENV)/bin/ruff format --check installer tests bench stacks lab
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/ansible-lint playbooks/

typecheck: setup
	$(VENV)/bin/mypy

unit: setup
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

test: setup lab-tools lint typecheck
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/pytest $(PYTEST_ARGS)

demo: setup lab-tools
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo

# The air-gapped variant: a bundle from the lab's upstream, the upstream switched off, bootstrap.
demo-airgap: setup lab-tools
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo-airgap

lab-up: setup lab-tools
	lab/up

lab-down:
	lab/down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
