# The two commands of the README: `make serve` and `make test`.
# Adapter settings pass through as EMBED_* variables: `EMBED_API_KEY=s3cret make serve`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?=
NAME ?=
HOST ?= 127.0.0.1
PORT ?= 30000
TRITON_HTTP_PORT ?= 8000
TRITON_GRPC_PORT ?= 8001
TRITON_METRICS_PORT ?= 8002
REEXPORT ?=
EXPORT_ARGS ?=
PYTEST_ARGS ?=

.PHONY: serve test test-compose export bench clean

# Each command installs what it needs: serving the `serve` extra, tests `test`, benchmarks `bench`
# (each a superset of the one before); a later, larger install reuses the venv.
$(BIN)/python:
	@echo "creating $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# pip is quiet, so say what takes the time. PYTHONWARNINGS reaches setuptools in pip's build
# environment: its editable-install warning box concerns layouts this project does not have.
$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	@echo "installing the '$*' dependencies into $(VENV) (PyTorch, ONNX, Triton: 1-2 minutes the first time, a few seconds after)"
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet -e '.[$*]'
	@echo "installed"
	touch $@

serve: $(VENV)/.installed-serve
	$(BIN)/python -m launcher serve $(if $(MODEL),--model $(MODEL)) $(if $(NAME),--name $(NAME)) \
		--host $(HOST) --port $(PORT) --triton-http-port $(TRITON_HTTP_PORT) \
		--triton-grpc-port $(TRITON_GRPC_PORT) --triton-metrics-port $(TRITON_METRICS_PORT) \
		$(if $(REEXPORT),--reexport) $(if $(WORKERS),--workers $(WORKERS)) $(foreach a,$(EXPORT_ARGS),--export-arg=$(a))

test: $(VENV)/.installed-test build/langchain-cohere/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# LangChain's Cohere client needs cohere 5.x beside the test extra's 7.x: a folder of its own, which the
# test puts on a child process's path (tests/langchain-cohere.txt).
build/langchain-cohere/.installed: tests/langchain-cohere.txt | $(BIN)/python
	rm -rf build/langchain-cohere
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet --target build/langchain-cohere -r $<
	touch $@

# The CPU compose stack built and run on a Docker Engine (as root with CI set, it installs one).
test-compose: $(VENV)/.installed-test
	rm -f build/compose-report.txt
	$(BIN)/python -m pytest -m compose tests/test_compose.py $(PYTEST_ARGS)
	cat build/compose-report.txt

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf build model_repository/*/ .pytest_cache
