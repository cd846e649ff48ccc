# Two set-up commands: `make demo` and `make test`. Both build .venv on first use, with every
# package pinned by constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint typecheck pytest bench clean constraints

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bastion demo

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

pytest: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench

# Refresh the pins on purpose: resolve the newest releases in a scratch venv, write them to
# constraints.txt, then run `make test` before committing the result.
constraints:
	rm -rf .venv-pins
	$(PYTHON) -m venv .venv-pins
	.venv-pins/bin/python -m pip install --quiet --upgrade pip
	.venv-pins/bin/python -m pip install --quiet -e '.[dev]'
	{ sed -n '/^#/p' constraints.txt; \
	  .venv-pins/bin/python -m pip freeze --exclude-editable; \
	  .venv-pins/bin/python -m pip --version | awk '{print "pip==" $$2}'; } > constraints.new
	grep '^#' constraints.new > constraints.txt
	grep -v '^#' constraints.new | sort -f >> constraints.txt
	rm -rf .venv-pins constraints.new

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
