# Every pipeline's inputs and knobs, with defaults for the toy world. Override any on the command
# line to run the same pipelines on your own model and data, e.g.
#   make r1 RUN_DIR=runs/qwen BASE=path/to/Qwen2.5-1.5B PROMPTS=gsm8k-train.jsonl \
#     EVAL_DATA=math500.jsonl GRPO_ARGS="--lr 1e-6 --max-new-tokens 1024 --beta 0.001" ...

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

# RL: steps of each GRPO stage (R1-Zero: STEPS), and rollouts and learning rate sized for the toy
# (a 1.5B model wants e.g. --lr 1e-6 --max-new-tokens 1024).
STEPS ?= 150
REASONING_STEPS ?= 60
FINAL_STEPS ?= 40
GRPO_ARGS ?= --prompts-per-step 16 --num-generations 8 --max-new-tokens 96 --lr 2e-4 --beta 0.001
# The preference-style reward of the last R1 stage: a toy judge of general replies here,
# a trained reward model (rm:PATH) for a real model.
PREFERENCE ?= r1cli.toy.judge:helpfulness

# SFT (cold start, the second SFT, distillation) and sampling.
SFT_ARGS ?= --lr 1e-3 --warmup 0.1 --batch-size 16 --max-length 256
N ?= 2
SAMPLE_ARGS ?= --max-new-tokens 128 --generation-batch-size 256
MIX_TOTAL ?= 2400
# Prompts of the final RL stage: reasoning and general prompts, 3 to 1 (every toy general prompt once).
FINAL_PROMPTS_TOTAL ?= 1600
DISTILL_ARGS ?= --epochs 2 --lr 2e-3 --warmup 0.1 --batch-size 16 --max-length 256 --max-new-tokens 128 --generation-batch-size 256

# Evaluation: pass@1 over EVAL_N samples, pass@EVAL_N and maj@EVAL_N.
EVAL_N ?= 8
EVAL_ARGS ?= --max-new-tokens 128 --by lang

# The marker of a finished checkpoint: r1.json for one made here, config.json for one from
# elsewhere (nothing for a hub name, which make cannot see).
done = $(if $(filter $(RUN_DIR)/%,$(1)),$(1)/r1.json,$(wildcard $(1)/config.json))
