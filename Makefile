# Two commands: `make demo` and `make test`. Both bootstrap .venv when it is missing or stale.
# `make test-fast`: the host-only tests (tests/conftest.py FAST_MODULES), under a minute.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint clean venv

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

# the demo; it ends with a summary and the command that shows its data in the dashboard
# (`edgectl demo --dashboard 0` serves the dashboard during the demo and after it, until Ctrl-C)
demo: $(STAMP)
	$(VENV)/bin/edgectl demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m fast $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check edge host_tools tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
