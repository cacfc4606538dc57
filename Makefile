# Newcomer entry points: `make demo` and `make test` set everything up from a clean clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# 2 cores on the reference machine; `make test JOBS=` runs the suite serially.
PYTEST_ARGS ?=

.PHONY: all demo test test-fast bench fuzz cuda fixtures clean

all: test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first, pinned, so that nothing pulls a multi-GB CUDA build; llama-cpp-python builds
# ggml 0.25.3 from source (about 5 minutes the first time; pip caches the wheel afterwards).
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[test]"
	touch $@

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not fuzz" $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not fuzz" $(PYTEST_ARGS)

# Convert the shipped tiny LLaVA-1.5 and describe the fixture images; fails on a wrong answer.
demo: $(STAMP)
	$(PY) fixtures/demo.py

# Sizes/devices: GGUFLITE_BENCH_SIZE=tiny|small|full|7b, GGUFLITE_BENCH_DEVICE=cpu|cuda.
bench: $(STAMP)
	$(PY) -m bench
	$(PY) -m bench.profile_decode

fuzz: $(STAMP)
	$(PY) -m pytest tests -m fuzz

# Rebuild the ggml provider with the CUDA backend for the local GPU.
cuda: $(STAMP)
	CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=native" $(PIP) install \
	    --upgrade --force-reinstall --no-cache-dir --no-deps --no-binary llama-cpp-python \
	    "llama-cpp-python==0.3.36"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
