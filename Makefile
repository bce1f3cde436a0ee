# Two commands matter: `make run` (the whole system on 127.0.0.1) and `make test`.
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
VAR_DIR ?= var
MQTT_PORT ?= 1883
# `make tail` reads the history (ARGS=--since 10m) from the API of `make run`, wherever
# TRACKER_PORT moved it; mqtt-tail's own default otherwise.
TAIL_API = $(if $(TRACKER_PORT),--api http://127.0.0.1:$(TRACKER_PORT))

.DEFAULT_GOAL := help
.PHONY: help deps run cluster tail test test-compose test-fast lint format bench bench-cluster soak seed clean clean-state

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' \
		'{ name[NR] = $$1; text[NR] = $$2; if (length($$1) > width) width = length($$1) } \
		END { for (i = 1; i <= NR; i++) printf "  make %-" width "s  %s\n", name[i], text[i] }'

$(STAMP): pyproject.toml scripts/bootstrap-venv.sh
	@PYTHON=$(PYTHON) scripts/bootstrap-venv.sh $(VENV) -e '.[dev]'

deps: $(STAMP) ## create .venv and install the project
	@scripts/ensure-mosquitto.sh

run: deps  ## fresh machine to running system: broker :1883, API :9000 (Ctrl-C stops both)
	$(BIN)/python -m scripts.devstack

cluster: deps  ## the scale-out system: 3 RabbitMQ nodes, PostgreSQL, 2 trackers behind HAProxy :9000
	@scripts/ensure-cluster-tools.sh
	$(BIN)/python -m scripts.cluster

tail: deps  ## mqtt-tail on every account with the reader login of `make run` (ARGS='--json' etc.)
	@test -f "$(VAR_DIR)/credentials.env" || { echo "no $(VAR_DIR)/credentials.env: start the system with 'make run' first (with the same VAR_DIR)" >&2; exit 1; }
	@set -a; . "$(VAR_DIR)/credentials.env"; set +a; exec $(BIN)/mqtt-tail --port $(MQTT_PORT) $(TAIL_API) --account + $(ARGS)

test: deps  ## the full suite with line coverage
	@scripts/ensure-test-tools.sh docker-compose openssl
	@scripts/ensure-cluster-tools.sh
	$(BIN)/pytest --cov --cov-report=term --cov-fail-under=90

test-compose: deps  ## both compose stacks for real under podman: images, up, checks, down (README)
	$(BIN)/pytest -p no:cacheprovider --compose tests/compose

test-fast: deps  ## the suite without the slow end-to-end scenarios
	$(BIN)/pytest -m 'not slow'

lint: deps  ## ruff (format + lint), mypy --strict and the import layers (lint-imports)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: deps
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

seed: deps  ## create the schema and upsert demo accounts into var/tracker.db
	$(BIN)/python data/seed.py

bench: deps  ## end-to-end throughput, latency and zero-loss check (see docs/benchmarks.md)
	@scripts/ensure-test-tools.sh wrk
	$(BIN)/python -m bench

bench-cluster: deps  ## `make bench` plus the 3-node RabbitMQ cluster beside it: peak and one node kill
	@scripts/ensure-test-tools.sh wrk
	@scripts/ensure-cluster-tools.sh
	$(BIN)/python -m bench --cluster

soak: deps  ## 5-minute soak at half the peak rate: memory per worker must stay flat
	@scripts/ensure-test-tools.sh wrk
	$(BIN)/python -m bench --soak 300

clean: clean-state  ## remove the venv and local state under VAR_DIR (database, broker data, credentials)
	rm -rf $(VENV) .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache

# The state alone. A VAR_DIR is removed only when make run or make cluster made it (the
# marker of its .gitignore), so a mistyped VAR_DIR (a home directory, say) removes nothing.
clean-state:
	@if [ -d "$(VAR_DIR)" ] && [ "$(VAR_DIR)" != var ] && ! grep -qs '^# Local state of make run' "$(VAR_DIR)/.gitignore"; then \
		echo "make clean: $(VAR_DIR) was not made by make run or make cluster (no marker in its .gitignore): not removed" >&2; exit 1; fi
	rm -rf "$(VAR_DIR)"
