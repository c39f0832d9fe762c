# Every pipeline's inputs and knobs, with defaults for the toy world. Override any on the command
# line to run the same pipelines on your own model and data, e.g.
#   make r1-zero RECIPES=recipes/qwen2.5-1.5b-gsm8k RUN_DIR=runs/qwen BASE=Qwen/Qwen2.5-1.5B \
#     PROMPTS=../shared/data/gsm8k/train.jsonl EVAL_DATA=../shared/data/gsm8k/test.jsonl

RUN_DIR ?= runs/demo
TOY_SEED ?= 0
DATA_DIR ?= $(RUN_DIR)/data

# Inputs.
BASE ?= $(RUN_DIR)/base
COLD_START ?= $(DATA_DIR)/cold_start.jsonl
PROMPTS ?= $(DATA_DIR)/rl_prompts.jsonl
GENERAL ?= $(DATA_DIR)/general.jsonl
GENERAL_PROMPTS ?= $(DATA_DIR)/general_prompts.jsonl
EVAL_DATA ?= $(DATA_DIR)/eval.jsonl
TEACHER ?= $(RUN_DIR)/r1
STUDENT ?= $(RUN_DIR)/student-base

# Each stage's options: one YAML file per stage in RECIPES (keys are option names, as `--config`
# reads them): recipes/toy for the toy world, recipes/qwen2.5-1.5b-gsm8k for R1-Zero on GSM8K.
RECIPES ?= recipes/toy

# Overrides, empty unless set: options after a stage's file (the command line overrides the file),
# e.g. GRPO_ARGS="--lr 1e-6" for every GRPO stage; the steps of each GRPO stage (R1-Zero: STEPS),
# completions per prompt of rejection sampling and distillation (N), samples per eval prompt (EVAL_N).
GRPO_ARGS ?=
SFT_ARGS ?=
SAMPLE_ARGS ?=
FILTER_ARGS ?=
DISTILL_ARGS ?=
EVAL_ARGS ?=
STEPS ?=
REASONING_STEPS ?=
FINAL_STEPS ?=
N ?=
EVAL_N ?=
# The preference-style reward of the last R1 stage: RECIPES/r1.yaml's (the toy judge of general
# replies in recipes/toy); a trained reward model (rm:PATH) for a real model replaces it.
PREFERENCE ?=

# Rows of the second SFT's 75/25 mix, and prompts of the final RL stage: reasoning and general
# prompts, 3 to 1 (every toy general prompt once).
MIX_TOTAL ?= 2400
FINAL_PROMPTS_TOTAL ?= 1600

# OPTION VALUE when VALUE is set (an override of the stage's file), else nothing.
given = $(if $(strip $(2)),$(1) $(2))

# The marker of a finished checkpoint: r1.json for one made here, config.json for one from
# elsewhere (nothing for a hub name, which make cannot see).
done = $(if $(filter $(RUN_DIR)/%,$(1)),$(1)/r1.json,$(wildcard $(1)/config.json))
