# genimage: `make run` starts the whole stack on loopback, `make test` runs the whole suite.
# Only Python 3.11 and make are needed; everything else is installed into .venv.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PACKAGES := -e libs/common[db,storage] -e libs/devstack[containers] \
            -e services/gateway -e services/billing -e services/generation -e services/gallery
SOURCES := $(wildcard libs/*/pyproject.toml services/*/pyproject.toml) requirements-dev.txt constraints.txt
# promtool checks deploy/prometheus in the suite (tests/ops); not on PyPI, see deploy/tools/install-promtool.sh.
PROMTOOL := $(BIN)/promtool

.PHONY: run test lint fmt install tools clean-data constraints faults

install: $(STAMP)

$(STAMP): $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt $(PACKAGES) -r requirements-dev.txt
	touch $(STAMP)

tools: $(PROMTOOL)

$(PROMTOOL): | $(STAMP)
	sh deploy/tools/install-promtool.sh $(PROMTOOL)

run: $(STAMP)
	$(BIN)/python -m genimage_devstack run --data-dir .data

test: $(STAMP) $(PROMTOOL)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The long fault matrix (>= 1,000 generations, every fault several times) against a private stack:
# prints the faults x invariants table, writes bench/results/faults.json and faults.md.
faults: $(STAMP)
	$(BIN)/python -m tests.faults --long $(FAULTS_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check libs services tests bench
	$(BIN)/ruff format --check libs services tests bench

fmt: $(STAMP)
	$(BIN)/ruff check --fix libs services tests bench
	$(BIN)/ruff format libs services tests bench

# Re-pin every third-party dependency to what is installed now.
constraints: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean-data:
	rm -rf .data
