# melstream — `make demo` and `make test` work on a fresh machine with Python 3.11 and pip.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint unit integration system quality bench voices sysdeps repo clean reliability soak

# System packages, from apt when missing: espeak-ng (the voices' text front end and the training teacher)
# and docker-compose (tests validate docker-compose.yml with it; no Docker engine is needed for that), and haproxy
# (the load balancer of the scale-out tests, started on loopback by the tests themselves; Debian's package starts
# no service here, there being no init system)
sysdeps:
	@ldconfig -p | grep -q libespeak-ng.so.1 || { \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q espeak-ng libespeak-ng1 || { \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q espeak-ng libespeak-ng1; }; }
	@command -v docker-compose >/dev/null || { \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose || { \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose; }; }
	@command -v haproxy >/dev/null || { \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy || { \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy; }; }

$(STAMP): pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: it is the CPU build on this machine's disk; any other spec pulls a CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	# the client distribution before the package that depends on it (it is not on any index)
	$(BIN)/pip install --quiet -e ./client
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP) sysdeps
	$(BIN)/melstream demo --out out

# every tier (tests/conftest.py says what each holds); each tier also runs alone:
#   unit         no server, no trained voice, no espeak-ng (synthetic voices); under a minute
#   integration  a real tritonserver from the wheel, the shipped voices
#   system       docker-compose validation, locust and benchmark runs, the command line end to end
#   quality      the shipped voices against the espeak-ng teacher, espeak-ng itself, training smoke runs
test: $(STAMP) sysdeps lint
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check melstream client tests training python_backends benchmarks loadtests
	$(BIN)/mypy melstream training loadtests
	$(BIN)/mypy client/melstream_client

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP) sysdeps
	$(BIN)/pytest -q tests/integration

system: $(STAMP) sysdeps
	$(BIN)/pytest -q tests/system

quality: $(STAMP) sysdeps
	$(BIN)/pytest -q tests/quality

# the reliability suite at full size (the quick versions run in `make test`): bad-input corpus, cancellation
# storms and memory, overload, stub and server kills, stops; then its benchmarks (tables + plots in
# out/reliability; RELIABILITY.md gives one run's)
reliability: $(STAMP) sysdeps
	MELSTREAM_FULL=1 $(BIN)/pytest -q -m reliability
	$(BIN)/python benchmarks/kills.py --rounds 3 --out out/reliability
	$(BIN)/python benchmarks/overload.py --out out/reliability
	$(BIN)/python benchmarks/overload.py --chars 9000 --out out/reliability/overload-long
	$(BIN)/python benchmarks/churn.py --grpc 0 --http 700 --rounds 12 --out out/reliability/churn-http
	$(BIN)/python benchmarks/churn.py --long --grpc 0 --http 300 --rounds 6 --out out/reliability/churn-long
	# gRPC cancellations crash Triton 2.51's own gRPC frontend now and then (a race fixed upstream in 2.53+:
	# RELIABILITY.md); this run reports the round it happened in, so its exit status is not the suite's
	-$(BIN)/python benchmarks/churn.py --grpc 500 --http 200 --rounds 10 --out out/reliability/churn-mixed

# mixed traffic with periodic stub kills and cancellations, every utterance checked against a reference
# (make soak SOAK_MINUTES=5); table, RSS plot and first-chunk percentiles in out/soak
SOAK_MINUTES ?= 30
soak: $(STAMP) sysdeps
	$(BIN)/python benchmarks/soak.py --minutes $(SOAK_MINUTES) --out out/soak

bench: $(STAMP) sysdeps
	$(BIN)/python benchmarks/first_frame.py --out out/bench
	$(BIN)/python benchmarks/streams.py --out out/bench

# locust, headless and bounded, against a server started on free ports: CSV + HTML reports in out/loadtest/
# (make loadtest LOAD_USERS=16 LOAD_TIME=2m LOAD_ARGS='-- --voices fastvoice'); web UI: see loadtests/README.md
LOAD_USERS ?= 8
LOAD_TIME  ?= 60s
LOAD_ARGS  ?=
.PHONY: loadtest
loadtest: $(STAMP) sysdeps
	$(BIN)/python -m loadtests.run --users $(LOAD_USERS) --run-time $(LOAD_TIME) --out out/loadtest $(LOAD_ARGS)

# reproduce the shipped voices: corpus -> espeak-ng teacher -> train both (18 and 20 min, one core each,
# side by side) -> export to addons/ -> model cards -> model repository
voices: $(STAMP) sysdeps
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
