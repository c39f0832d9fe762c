# The toy world: data, a pre-trained base, and the cold-start SFT of the R1 pipeline.
# Each stage is a file target (a checkpoint's r1.json is written last), so make reruns only
# what is missing, and a stage killed half-way is resumed by running make again.
#   make demo                     everything below, on this machine's CPU
#   make -n demo                  print the commands

RUN_DIR ?= runs/demo
TOY_SEED ?= 0
DATA_DIR := $(RUN_DIR)/data
BASE ?= $(RUN_DIR)/base
COLD_START ?= $(DATA_DIR)/cold_start.jsonl

# The toy corpora: pretrain, cold_start, rl_prompts, eval, general (manifest.json comes last).
$(DATA_DIR)/manifest.json: | $(STAMP)
	$(R1) toy data $(DATA_DIR) --seed $(TOY_SEED)

# A ~1M-parameter base pre-trained from scratch on the noisy corpus (about 3 minutes on 2 cores).
$(RUN_DIR)/base/r1.json: $(DATA_DIR)/manifest.json
	$(R1) toy base $(RUN_DIR)/base --data $(DATA_DIR)/pretrain.jsonl --seed $(TOY_SEED)

# Cold start: SFT on a few hundred clean long chains of thought (R1's first stage).
$(RUN_DIR)/cold-start/r1.json: $(RUN_DIR)/base/r1.json $(DATA_DIR)/manifest.json
	$(R1) sft $(BASE) $(COLD_START) --out $(RUN_DIR)/cold-start \
	  --epochs 3 --lr 1e-3 --warmup 0.1 --batch-size 16 --max-length 256 --seed $(TOY_SEED)

demo: $(RUN_DIR)/cold-start/r1.json
	@echo "demo checkpoints: $(RUN_DIR)/base $(RUN_DIR)/cold-start (metrics in each metrics.jsonl, lineage in r1.json)"
