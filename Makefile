# melstream — `make demo` and `make test` work on a fresh machine with Python 3.11 and pip.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint unit integration bench voices espeak repo clean

# espeak-ng: the voices' text front end (phonemes) and the training teacher
espeak:
	@ldconfig -p | grep -q libespeak-ng.so.1 || { \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q espeak-ng libespeak-ng1 || { \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q espeak-ng libespeak-ng1; }; }

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: it is the CPU build on this machine's disk; any other spec pulls a CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP) espeak
	$(BIN)/melstream demo --out out

test: $(STAMP) espeak lint
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check melstream tests training python_backends benchmarks
	$(BIN)/mypy melstream

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

bench: $(STAMP) espeak
	$(BIN)/python benchmarks/first_frame.py --out out/bench

# reproduce the shipped voices: corpus -> espeak-ng teacher -> train both (18 and 20 min, one core each,
# side by side) -> export to addons/ -> model cards -> model repository
voices: $(STAMP) espeak
	$(BIN)/python -m training.corpus --out data/corpus.json
	$(BIN)/python -m training.teacher --corpus data/corpus.json --out data/teacher
	$(BIN)/python -m training.train_duration --data data/teacher --out addons/fastvoice --minutes 18 --threads 1 > data/train_fastvoice.log 2>&1 & \
	$(BIN)/python -m training.train_attention --data data/teacher --out addons/tacovoice --minutes 20 --threads 1 > data/train_tacovoice.log 2>&1; \
	wait
	$(BIN)/python benchmarks/voice_quality.py --teacher data/teacher --addons addons --out out/quality
	$(BIN)/python -m training.model_card --addons addons --quality out/quality
	$(BIN)/melstream build-repo

repo: $(STAMP)
	$(BIN)/melstream build-repo

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
