# The two commands of the README: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?=
NAME ?=
PORT ?= 30000
TRITON_HTTP_PORT ?= 8000
TRITON_GRPC_PORT ?= 8001
TRITON_METRICS_PORT ?= 8002
PYTEST_ARGS ?=

.PHONY: serve test test-compose export bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

serve: $(BIN)/.installed
	$(BIN)/python -m launcher serve $(if $(MODEL),--model $(MODEL)) $(if $(NAME),--name $(NAME)) \
		--port $(PORT) --triton-http-port $(TRITON_HTTP_PORT) \
		--triton-grpc-port $(TRITON_GRPC_PORT) --triton-metrics-port $(TRITON_METRICS_PORT)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The CPU compose stack built and run on a Docker Engine (as root with CI set, it installs one).
test-compose: $(BIN)/.installed
	rm -f build/compose-report.txt
	$(BIN)/python -m pytest -m compose tests/test_compose.py $(PYTEST_ARGS)
	cat build/compose-report.txt

bench: $(BIN)/.installed
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf build model_repository/*/ .pytest_cache
