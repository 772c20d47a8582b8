# Two entry points for a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every dependency, pinned with hashes (pip-tools): what `make install` installs, exactly.
LOCK := requirements.lock
LOCK_EXTRAS := --extra convert --extra train --extra dev
PIP_TOOLS := pip-tools==7.6.2

.PHONY: install weights serve test lint bench lock clean

# Re-install only when the lock or the project changes. --no-deps: nothing the lock does not pin;
# --no-build-isolation: the project builds with the lock's setuptools, not a fresh download.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

install: $(STAMP)

weights: install
	$(BIN)/faceid weights

serve: weights
	$(BIN)/faceid serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# The behaviour tests again with templates sealed at rest (a fresh key in FACEID_ENCRYPTION_KEY_FILE):
# what users see must not change when encryption is on.
ENCRYPTED_TESTS := tests/test_service.py tests/test_face_routes.py tests/test_verify.py tests/test_detect.py \
	tests/test_collections.py tests/test_portable.py tests/test_unknowns.py tests/test_retention.py tests/test_audit.py \
	tests/test_reliability.py tests/test_photo_evidence.py tests/test_client.py

test: weights lint
	$(BIN)/python -m pytest
	FACEID_TEST_ENCRYPTION=1 $(BIN)/python -m pytest -q -p no:cacheprovider $(ENCRYPTED_TESTS)

bench: weights
	$(BIN)/python -m benchmarks.embed
	$(BIN)/python -m benchmarks.service

# The one command that refreshes the lock after pyproject.toml's dependencies change (pip-tools
# resolves with this machine's pip and its package indexes, as `make install` installs).
lock:
	test -x .venv-lock/bin/pip-compile || ($(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install --quiet $(PIP_TOOLS))
	.venv-lock/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	    --no-emit-find-links $(LOCK_EXTRAS) --output-file $(LOCK) pyproject.toml

clean:
	rm -rf $(VENV) .venv-lock .pytest_cache
