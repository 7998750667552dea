# Two commands do all set-up on a fresh machine with Python 3.11 and pip:
#   make demo   creates .venv, installs the package and its extras graph, plot, progress, runs the training demo
#   make test   creates .venv, installs the dev extra, runs the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# the shared data folder beside the checkout (tests and CI); the project downloads otherwise
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/ptb),)
export TINYGRAD_RNN_DATA ?= $(SHARED_DATA)
endif

.PHONY: demo test test-slow lint graphs bench dot mpi docs

# with the optional extras: the demo and the tools draw graphs, plot curves and show progress
$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[graph,plot,progress]'
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

$(BIN)/.installed-docs: $(BIN)/.installed
	$(BIN)/python -m pip install -q -e '.[docs]'
	touch $@

# Graphviz's dot renders graphs: install Debian's package when we are root with apt-get,
# otherwise say how (the tests that need dot skip without it).
dot:
	@if ! command -v dot >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Graphviz (dot) with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null; \
	  else \
	    echo "Graphviz's dot is missing: install it with 'sudo apt-get install graphviz' (Debian/Ubuntu)," \
	         "'brew install graphviz' (macOS) or 'conda install graphviz'"; \
	  fi; \
	fi

# Open MPI's mpirun runs the data-parallel tests (mpi4py comes with the dev extra): install Debian's
# openmpi-bin when we are root with apt-get, otherwise say how (those tests then skip, or fail under CI)
mpi:
	@if ! command -v mpirun >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Open MPI (mpirun) with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      openmpi-bin >/dev/null; \
	  else \
	    echo "mpirun is missing: install it with 'sudo apt-get install openmpi-bin' (Debian/Ubuntu)," \
	         "'brew install open-mpi' (macOS), or 'pip install mpich' into .venv"; \
	  fi; \
	fi

demo: $(BIN)/.installed dot
	$(BIN)/python tools/demo.py --out runs/demo

test: $(BIN)/.installed-dev dot mpi
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-slow: $(BIN)/.installed-dev dot mpi
	$(BIN)/python -m pytest -q -p no:cacheprovider -m slow

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check --line-length 120 --select E,F,W tinygrad_rnn models tools tests

graphs: $(BIN)/.installed dot
	$(BIN)/python tools/render_graph.py --out docs/img

bench: $(BIN)/.installed
	$(BIN)/python tools/bench_engine.py
	$(BIN)/python tools/bench_lm.py

# the HTML guides, the tutorials (mkdocs_tutorials.py executes docs/tutorials/*.py at full size, a few
# minutes; TINYGRAD_RNN_TUTORIAL_FAST=1 make docs runs their fast setting) and the API reference (from the
# docstrings) in site/; --strict makes every warning, such as a docstring griffe cannot parse or a
# broken link, fail the build
docs: $(BIN)/.installed-docs
	$(BIN)/mkdocs build --strict
