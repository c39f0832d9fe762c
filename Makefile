# r1: the DeepSeek-R1 pipeline as make targets.
#   make demo     install, then run R1-Zero, R1 and distillation on the toy world, on this machine
#   make test     install, then run the test suite
# Pipelines live in pipelines/*.mk; `make -n TARGET` prints the commands they run.

PYTHON ?= python3
TORCH ?= torch==2.13.0
# Where torch comes from: pip's index unless set (PyPI: on Linux x86-64 its torch is the CUDA 13
# build, which runs on a CPU too), e.g. https://download.pytorch.org/whl/cpu for a CPU-only torch
# or https://download.pytorch.org/whl/cu126 for CUDA 12.6.
TORCH_INDEX ?=
# vLLM for --engine vllm (make install-vllm): a release pins one torch; 0.32.0 pins torch 2.13.0.
VLLM ?= vllm==0.32.0
VENV := .venv
BIN := $(VENV)/bin
R1 := $(BIN)/r1
STAMP := $(VENV)/.installed

export TOKENIZERS_PARALLELISM ?= false

.PHONY: help install install-vllm test test-slow lint demo
.DEFAULT_GOAL := help

help:
	@echo "make demo       install, then run R1-Zero, R1 and distillation on the toy world (runs/demo/summary.md)"
	@echo "make r1-zero    R1-Zero: GRPO on BASE with accuracy and format rewards"
	@echo "make r1         R1: cold start, reasoning RL, rejection sampling, SFT, final RL"
	@echo "make distill    distil TEACHER's correct traces into STUDENT"
	@echo "                (variables and their toy defaults: pipelines/settings.mk; make -n TARGET prints the commands)"
	@echo "make test       install, then run the tests (slow ones: make test-slow)"
	@echo "make install    create .venv with torch ($(TORCH)$(if $(TORCH_INDEX), from $(TORCH_INDEX))) and r1 (editable, with dev extras)"
	@echo "make install-vllm  add vLLM ($(VLLM)) to .venv, for --engine vllm on a CUDA GPU"

install: $(STAMP)

# torch first, so that the package's torch requirement is already met and pip pulls no other build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

# The tests and the toy world (here and in pipelines/toy.mk) need nothing from the hub, so they run
# offline: a hub name there is a mistake, said at once. Every other target may download, so that
# `make r1-zero BASE=Qwen/...` works. (An environment's own HF_HUB_OFFLINE is kept.)
test test-slow demo: export HF_HUB_OFFLINE ?= 1

# vLLM's wheels are built against PyPI's CUDA torch: a CPU-only one (TORCH_INDEX=.../cpu) is refused.
install-vllm: $(STAMP)
	$(BIN)/python -c "import sys, torch; sys.exit(0 if '+cpu' not in torch.__version__ else \
	  'install-vllm: .venv holds a CPU-only torch (' + torch.__version__ + '): remove .venv and make install-vllm without TORCH_INDEX')"
	$(BIN)/python -m pip install -q "$(VLLM)" "$(TORCH)" -e ".[dev,vllm]"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check r1cli tests bench

include pipelines/settings.mk
include $(filter-out pipelines/settings.mk,$(wildcard pipelines/*.mk))
