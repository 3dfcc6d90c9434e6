# The two commands: `make serve` and `make test`. Each creates/updates its own virtualenv
# from pyproject.toml, so they work on a fresh machine with Python 3.11 and pip.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
SERVE_VENV := .venv-serve
TEST_VENV := .venv
# Tools the suite runs but the project never imports: AWS's Lambda Runtime Interface Emulator, the
# binary inside the aws-sam-cli wheel (installed without its dependencies: only the binary is used,
# and aws-sam-cli pins boto3/click, which must not reach the project's venv).
TOOLS_VENV := .venv-tools
# Ray Serve (mlgate[ray]) in a venv of its own: its dependencies never reach the test venv.
RAY_VENV := .venv-ray
AWS_SAM_CLI := aws-sam-cli==1.170.0
# The AWS CLI (v1 from PyPI, with its own pinned botocore) drives mlgate's Step Functions API in tests.
AWS_CLI := awscli==1.46.2
# The Open Inference Protocol's own clients (NVIDIA's tritonclient, KServe's SDK) drive /v2 in tests;
# they pin ml-dtypes/protobuf/pandas below the project's, so they live here, run as a subprocess.
OIP_CLIENTS := 'tritonclient[http]==2.73.0' 'kserve==0.21.0'
PIP_FLAGS ?= --disable-pip-version-check -q

.PHONY: serve test lint typecheck unit bench bench-shadow bench-lambda bench-ray soak soak-ray clean

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

$(RAY_VENV)/.installed: pyproject.toml
	test -x $(RAY_VENV)/bin/python || $(PYTHON) -m venv $(RAY_VENV)
	$(RAY_VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(RAY_VENV)/bin/pip install $(PIP_FLAGS) -e '.[serve,ray]' 'pytest>=8' 'pytest-timeout>=2.3' 'scikit-image>=0.22'
	touch $@

$(TOOLS_VENV)/.installed: Makefile
	test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install $(PIP_FLAGS) '$(AWS_CLI)' $(OIP_CLIENTS)
	$(TOOLS_VENV)/bin/pip install $(PIP_FLAGS) --no-deps '$(AWS_SAM_CLI)'
	touch $@

## Start the server on http://127.0.0.1:8000 with every reference model ready.
serve: $(SERVE_VENV)/.installed
	$(SERVE_VENV)/bin/mlgate serve

## Lint, type-check, check the import layers, run the whole test suite.
test: lint typecheck $(TOOLS_VENV)/.installed
	MLGATE_TOOLS_VENV=$(CURDIR)/$(TOOLS_VENV) $(TEST_VENV)/bin/pytest -q

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
bench: $(SERVE_VENV)/.installed $(RAY_VENV)/.installed
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk; } || { echo "bench: wrk is needed (apt-get install wrk)"; exit 1; }
	BENCH_PEER_PYTHON=$(PYTHON) PYTHONDONTWRITEBYTECODE=1 $(SERVE_VENV)/bin/python bench/run.py

## The shadow version's cost on W1 (issue 16; ~2 minutes): docs/benchmarks.md, "Shadow version at 100 %".
bench-shadow: $(SERVE_VENV)/.installed
	@command -v wrk >/dev/null || { echo "bench-shadow: wrk is needed (apt-get install wrk)"; exit 1; }
	PYTHONDONTWRITEBYTECODE=1 $(SERVE_VENV)/bin/python bench/shadow_overhead.py

## Ray Serve's cost per request on W1 and W2 vs single-process mlgate, on a two-node local Ray
## cluster (issue 18; ~4 minutes): docs/benchmarks.md, "Ray Serve behind the gateway".
bench-ray: $(RAY_VENV)/.installed
	@command -v wrk >/dev/null || { echo "bench-ray: wrk is needed (apt-get install wrk)"; exit 1; }
	PYTHONDONTWRITEBYTECODE=1 $(RAY_VENV)/bin/python bench/ray_overhead.py

## AWS Lambda cold starts through AWS's Runtime Interface Emulator (issue 18; ~2 minutes):
## docs/benchmarks.md, "Lambda cold start" (figures quoted in docs/deploy.md).
bench-lambda: $(TEST_VENV)/.installed $(TOOLS_VENV)/.installed
	MLGATE_TOOLS_VENV=$(CURDIR)/$(TOOLS_VENV) PYTHONDONTWRITEBYTECODE=1 $(TEST_VENV)/bin/python bench/lambda_cold_start.py

## The reliability and security suite at full length (docs/security.md): 30 kill -9 rounds,
## 100 fuzz examples per operation and mode, the overload comparison without shedding; ~10 min.
## CI runs the same tests shorter (`make test`). Measured figures go to .mlgate/security-figures.jsonl.
soak: $(TEST_VENV)/.installed soak-ray
	@mkdir -p .mlgate
	MLGATE_SOAK=1 MLGATE_SECURITY_FIGURES=$${MLGATE_SECURITY_FIGURES:-.mlgate/security-figures.jsonl} \
		$(TEST_VENV)/bin/pytest tests/security -q -p no:cacheprovider -o timeout=1800

## mlgate's gateway in front of Ray Serve on a real two-node local Ray cluster (tests/ray_cluster, ~1.5 min;
## needs PostgreSQL and Redis on 127.0.0.1 as the e2e suites do). In its own venv; not in `make test`.
soak-ray: $(RAY_VENV)/.installed
	$(RAY_VENV)/bin/pytest tests/ray_cluster -q -p no:cacheprovider

clean:
	rm -rf $(SERVE_VENV) $(TEST_VENV) $(TOOLS_VENV) $(RAY_VENV) .mlgate .pytest_cache .mypy_cache .ruff_cache
