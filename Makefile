# Two entry points: `make demo` (main job) and `make test` (whole suite). Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU build of torch unless a GPU is present: a plain `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.3" || echo "torch==2.13.0")

.PHONY: setup scorers demo test lint bench clean

$(BIN)/sfvq: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps gan-face-generate==1.1.1
	# MIT reference implementation, only used by a test that compares our BigGAN against it
	$(BIN)/pip install -q --no-deps pytorch-pretrained-biggan==0.1.1
	touch $(BIN)/sfvq

setup: $(BIN)/sfvq

demo: setup
	$(BIN)/sfvq run --network builtin:avatars-sg2 --bits 6 --outdir runs/demo

# Node packages of the offline face scorers (face-api); quiet, and instant when up to date.
scorers:
	bash scripts/install-scorers.sh

test: setup scorers
	$(BIN)/ruff check sfvq tests benchmarks
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check sfvq tests benchmarks
	$(BIN)/ruff format --check sfvq tests benchmarks

bench: setup
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) runs
