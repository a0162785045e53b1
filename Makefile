# melstream — `make demo` and `make test` work on a fresh machine with Python 3.11 and pip.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit integration bench addons repo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: it is the CPU build on this machine's disk; any other spec pulls a CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/melstream demo --out out

test: $(STAMP) lint
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check melstream tests scripts python_backends benchmarks
	$(BIN)/mypy melstream

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

bench: $(STAMP)
	$(BIN)/python benchmarks/first_frame.py --out out/bench

# regenerate the example addons' seeded weights, then the committed model repository
addons: $(STAMP)
	$(BIN)/python scripts/make_addons.py --out addons
	$(BIN)/melstream build-repo

repo: $(STAMP)
	$(BIN)/melstream build-repo

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
