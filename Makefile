# Marslink. `make demo` sets everything up and runs the demo; `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test test-slow bench lecture clean

setup: $(STAMP)

# The venv is built by the Makefile itself; torch is pinned to 2.13.0, and marslink needs only its
# CPU build. On Linux, PyPI's torch brings CUDA libraries (several GB); the CPU build is on
# PyTorch's own index, used when it answers (TORCH_INDEX= to skip it, or another mirror's URL).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	if [ -n "$(TORCH_INDEX)" ] && [ "$$(uname -s)" = Linux ] && $(BIN)/python -c "import sys, urllib.request; \
	    urllib.request.urlopen(sys.argv[1].rstrip('/') + '/torch/', timeout=15)" "$(TORCH_INDEX)" 2>/dev/null; then \
	  $(BIN)/python -m pip install --quiet --disable-pip-version-check --index-url "$(TORCH_INDEX)" torch==2.13.0; \
	else \
	  $(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0; \
	fi
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
