# The two commands of the README: `make demo` and `make test`. Both install what they need
# (idempotently, into .venv) and then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= runs/demo

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The demo's planted shortcuts must fail the gate: exit 1 is the expected result, so make
# succeeds on it and says so; any other code (bad input 2, a bug 3) fails make.
demo: $(STAMP)
	@$(BIN)/cxr-audit demo --out $(OUT); code=$$?; \
	if [ $$code -eq 1 ]; then \
	  echo "make demo: verdict FAIL, as expected: the demo data carries planted shortcuts (report: $(OUT)/report.html)"; \
	elif [ $$code -eq 0 ]; then \
	  echo "make demo: verdict PASS, NOT expected: the planted shortcuts were missed"; exit 1; \
	else exit $$code; fi

test: $(STAMP)
	$(BIN)/ruff check audit models probes reports tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n auto --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
