# Two entry points for a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install weights serve test bench clean

# Re-install only when the project's requirements change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[convert,train,dev]'
	touch $(STAMP)

install: $(STAMP)

weights: install
	$(BIN)/faceid weights

serve: weights
	$(BIN)/faceid serve

test: weights
	$(BIN)/python -m pytest

bench: weights
	$(BIN)/python -m benchmarks.embed
	$(BIN)/python -m benchmarks.service

clean:
	rm -rf $(VENV) .pytest_cache
