# make demo: the whole story on the toy world, on this machine's CPU, in under fifteen minutes.
# Pre-training the base uses both cores alone; then two stages run at a time (one torch thread
# each): the R1 chain, and beside it the student's pre-training, R1-Zero and the evaluations.
# Every checkpoint is evaluated on the held-out prompts, and the RL curves plotted.

DEMO_JOBS ?= 2
DEMO_STARTED := $(shell date +%s)
# In the order make should start them: the R1 chain (the longest) first.
DEMO_CHECKPOINTS ?= student-distill r1 r1-zero base student-base
RL_RUNS ?= r1-zero r1-reasoning r1

$(RUN_DIR)/summary.json: $(foreach c,$(DEMO_CHECKPOINTS),$(RUN_DIR)/eval/$(c).json)
	$(R1) summary base=$(RUN_DIR)/eval/base.json r1-zero=$(RUN_DIR)/eval/r1-zero.json r1=$(RUN_DIR)/eval/r1.json \
	  student-base=$(RUN_DIR)/eval/student-base.json student-distill=$(RUN_DIR)/eval/student-distill.json \
	  --out $@ --markdown $(RUN_DIR)/summary.md --since $(DEMO_STARTED)

$(RUN_DIR)/curves.png: $(foreach r,$(RL_RUNS),$(RUN_DIR)/$(r)/r1.json)
	$(R1) plot $(foreach r,$(RL_RUNS),$(RUN_DIR)/$(r)/metrics.jsonl) --out $@

demo: $(STAMP)
	$(MAKE) --no-print-directory $(call done,$(BASE))
	$(if $(filter 1,$(DEMO_JOBS)),,OMP_NUM_THREADS=1) $(MAKE) --no-print-directory -j$(DEMO_JOBS) \
	  $(RUN_DIR)/summary.json $(RUN_DIR)/curves.png DEMO_STARTED=$(DEMO_STARTED)
	@cat $(RUN_DIR)/summary.md
	@echo "curves: $(RUN_DIR)/curves.png  checkpoints, metrics and samples: $(RUN_DIR)/*/"
.PHONY: demo
