# The two commands of the README contract. Both create .venv with Python 3.11 if it is missing and
# install kfnas into it, every package pinned by images/constraints.txt.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test workers: one per core (pytest-xdist). A file's tests stay on one worker (--dist loadfile), so
# a module-scoped fixture (a pipeline run, a trained model) is built once; PYTEST_WORKERS=0 runs
# the tests in this process. Files are handed out in collection order (--no-loadscope-reorder;
# xdist's default hands out the files with the most tests first, which left the few-test, minutes-
# long pipeline files for the end, one worker idle), and tests/conftest.py collects the files
# that hold slow tests first, so the long ones start at once and the short ones fill in.
PYTEST_WORKERS ?= auto

.PHONY: demo test lint install clean

$(VENV)/bin/python:
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "kfnas needs Python 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(VENV)/bin/python pyproject.toml images/constraints.txt
	$(VENV)/bin/python -m pip install --quiet --upgrade "pip==26.3"
	$(VENV)/bin/python -m pip install --quiet -c images/constraints.txt -e '.[dev,torch]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kfnas run demo --out demo-output

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

test: $(STAMP) lint
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo-output build *.egg-info src/*.egg-info
