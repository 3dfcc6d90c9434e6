# The two commands: `make serve` and `make test`. Each creates/updates its own virtualenv
# from pyproject.toml, so they work on a fresh machine with Python 3.11 and pip.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
SERVE_VENV := .venv-serve
TEST_VENV := .venv
PIP_FLAGS ?= --disable-pip-version-check -q

.PHONY: serve test lint typecheck unit bench bench-shadow soak clean

$(SERVE_VENV)/.installed: pyproject.toml
	test -x $(SERVE_VENV)/bin/python || $(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(SERVE_VENV)/bin/pip install $(PIP_FLAGS) -e '.[serve]'
	touch $@

$(TEST_VENV)/.installed: pyproject.toml
	test -x $(TEST_VENV)/bin/python || $(PYTHON) -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(TEST_VENV)/bin/pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@

## Start the server on http://127.0.0.1:8000 with every reference model ready.
serve: $(SERVE_VENV)/.installed
	$(SERVE_VENV)/bin/mlgate serve

## Lint, type-check, check the import layers, run the whole test suite.
test: lint typecheck
	$(TEST_VENV)/bin/pytest -q

## Style and formatting (ruff).
lint: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/ruff check src tests
	$(TEST_VENV)/bin/ruff format --check src tests

## Types (mypy, strict) and the import-layer contracts (import-linter).
typecheck: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/mypy
	$(TEST_VENV)/bin/lint-imports

## The fast inner loop: the unit tests without the ones marked slow (well under a minute).
unit: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/pytest tests/unit -q -m "not slow" -p no:cacheprovider

## Benchmark suite (not part of `make test`/CI): floors, mlgate and the peers, ~20 min; writes
## docs/benchmarks.md. Peers get their own venvs under bench/.envs/ on first run (never project
## dependencies); wrk comes from Debian (installed here if missing, as root). BENCH_QUICK=1 for a
## 2-minute iteration run; see bench/run.py for the other knobs.
bench: $(SERVE_VENV)/.installed
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk; } || { echo "bench: wrk is needed (apt-get install wrk)"; exit 1; }
	BENCH_PEER_PYTHON=$(PYTHON) PYTHONDONTWRITEBYTECODE=1 $(SERVE_VENV)/bin/python bench/run.py

## The shadow version's cost on W1 (issue 16; ~2 minutes): docs/benchmarks.md, "Shadow version at 100 %".
bench-shadow: $(SERVE_VENV)/.installed
	@command -v wrk >/dev/null || { echo "bench-shadow: wrk is needed (apt-get install wrk)"; exit 1; }
	PYTHONDONTWRITEBYTECODE=1 $(SERVE_VENV)/bin/python bench/shadow_overhead.py

## The reliability and security suite at full length (docs/security.md): 30 kill -9 rounds,
## 100 fuzz examples per operation and mode, the overload comparison without shedding; ~10 min.
## CI runs the same tests shorter (`make test`). Measured figures go to .mlgate/security-figures.jsonl.
soak: $(TEST_VENV)/.installed
	@mkdir -p .mlgate
	MLGATE_SOAK=1 MLGATE_SECURITY_FIGURES=$${MLGATE_SECURITY_FIGURES:-.mlgate/security-figures.jsonl} \
		$(TEST_VENV)/bin/pytest tests/security -q -p no:cacheprovider -o timeout=1800

clean:
	rm -rf $(SERVE_VENV) $(TEST_VENV) .mlgate .pytest_cache .mypy_cache .ruff_cache
