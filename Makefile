# fedsilo — two commands: `make demo` runs a federated session end to end, `make test` tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow check format clean bench

setup: $(STAMP)

# torch goes in first, pinned, so nothing else pulls a different (CUDA) build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/fedsilo demo

# `make test` stays under 15 minutes on a 2-core machine by leaving out the tests marked
# `slow` (each 15 s or more: fault injection, the browser, VFL restarts); CI (.ci/run) runs
# them after it with `make test-slow`.
test: setup
	$(PY) -m pytest -q -m "not slow"

test-slow: setup
	$(PY) -m pytest -q -m slow

check: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff check --fix src tests bench
	$(VENV)/bin/ruff format src tests bench

# fedsilo beside Flower (issues 6 and 9: workloads a-f, see bench/README.md). Flower lives in
# its own virtualenv: installing flwr into .venv would downgrade fastapi/starlette/typer/rich/
# uvicorn under fedsilo. The harness bounds every run and stops every process it started;
# `timeout` bounds the whole run (30 min: d-f add an estimated 5-10 min to the 20 of a-c).
FLOWER_VENV := bench/.venv-flower
FLOWER_STAMP := $(FLOWER_VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

$(FLOWER_STAMP):
	$(PYTHON) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/pip install --quiet "flwr[simulation]==1.41.0" numpy
	touch $(FLOWER_STAMP)

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e ".[bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) $(FLOWER_STAMP)
	timeout 1800 $(PY) bench/harness.py --profile full

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache
