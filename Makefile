# nanocode: make install | test | lint | docs | demo | run | bench | sandbox-base | sandbox-image
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SANDBOX ?= --sandbox

.PHONY: install test lint docs demo run bench sandbox-base sandbox-image clean

$(BIN)/nanocode: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,ray]'
	$(BIN)/python -m compileall -q nanocode
	touch $@

install: $(BIN)/nanocode

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy nanocode

# docs/configuration.md, from the click options (tests/test_docs.py fails while they disagree).
docs: install
	$(BIN)/python docs/gen_options.py

# Replays a recorded goal (write a program, run it, fix it) with the real tools: no key needed.
# SANDBOX= runs it on the host instead of in the Docker sandbox.
demo: install
	@dir="$${DEMO_DIR:-$$(mktemp -d /tmp/nanocode-demo.XXXXXX)}"; \
	echo "demo project: $$dir"; \
	$(BIN)/nanocode $(SANDBOX) --replay demo/transcript.jsonl --project "$$dir" -p "$$(cat demo/goal.txt)"

run: install
	$(BIN)/nanocode $(ARGS)

# Bytecode first, as a regular install has it (an editable one, with PYTHONDONTWRITEBYTECODE set, never would).
bench: install
	$(BIN)/python -m compileall -q nanocode
	$(BIN)/python bench/bench.py $(ARGS)

# Where no registry can be reached: a Debian bookworm base built from Debian's packages.
sandbox-base:
	bash sandbox/build-base.sh

sandbox-image: install
	$(BIN)/nanocode sandbox build

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
