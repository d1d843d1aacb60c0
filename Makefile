# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch: the machine's wheel folder when present, else PyTorch's CPU index.
TORCH_SOURCE ?= $(if $(wildcard /opt/wheels/torch-2.13*),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)
# The demo needs only the runtime dependencies; tests, lint and benchmarks add the extras.
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SOURCE) "torch==2.13.*"
	$(BIN)/python -m pip install --quiet $(TORCH_SOURCE) -e .
	# Linkage's PSI: its wheel pins an older protobuf than Flower needs, so it is installed
	# without dependencies and runs on the protobuf Flower brings.
	$(BIN)/python -m pip install --quiet --no-deps "openmined-psi==2.0.*"
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet $(TORCH_SOURCE) -e ".[dev]"
	touch $(DEV_STAMP)

demo: $(STAMP)
	$(BIN)/hamanasu demo --out demo-output

# Tests that start Flower's deployment processes (a SuperLink, SuperNodes, node services)
# share module fixtures in order: they run after the rest, again on two pytest-xdist
# workers with a whole module per worker. Much of their time is spent waiting (a stage
# timeout, a dead node's missed heartbeats, the 60 s partition), which the other worker
# fills. The multi-host tests build network namespaces (root; they skip with the reason
# elsewhere).
FLOWER_TESTS := tests/deployment tests/e2e/test_deployment_consortium.py tests/multihost

test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadscope $(addprefix --ignore=,$(FLOWER_TESTS))
	$(BIN)/python -m pytest -q -n 2 --dist loadscope $(FLOWER_TESTS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy consent policies federation nodes coordinator hamanasu

bench: $(DEV_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) demo-output .pytest_cache
