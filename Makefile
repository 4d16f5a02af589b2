# Marslink. `make demo` sets everything up and runs the demo; `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test test-slow bench lecture clean

setup: $(STAMP)

# The venv is built by the Makefile itself; torch is pinned to the CPU build of 2.13.0.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,report,cluster]'
	$(BIN)/python scripts/compile_loops.py
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py $(ARGS)

lecture: $(STAMP)
	$(BIN)/python scripts/lecture.py $(ARGS)

# One pytest worker per core, each test file on one worker (files keep their order and fixtures).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadfile

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python scripts/bench.py $(if $(PAQ8PX),--paq8px "$(PAQ8PX)") $(ARGS)
	$(BIN)/python scripts/bench_link.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
