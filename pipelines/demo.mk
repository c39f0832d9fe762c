# make demo: the whole story on the toy world, on this machine's CPU, in about ten minutes.
# Two stages run at a time (one torch thread each), the R1 chain beside R1-Zero and the student.
# Then every checkpoint is evaluated on the held-out prompts, and the RL curves plotted.

DEMO_JOBS ?= 2
DEMO_STARTED := $(shell date +%s)
DEMO_CHECKPOINTS ?= base r1-zero cold-start r1 student-base student-distill
RL_RUNS ?= r1-zero r1-reasoning r1

$(RUN_DIR)/summary.json: $(foreach c,$(DEMO_CHECKPOINTS),$(RUN_DIR)/eval/$(c).json)
	$(R1) summary $(foreach c,$(DEMO_CHECKPOINTS),$(c)=$(RUN_DIR)/eval/$(c).json) \
	  --out $@ --markdown $(RUN_DIR)/summary.md --since $(DEMO_STARTED)

$(RUN_DIR)/curves.png: $(foreach r,$(RL_RUNS),$(RUN_DIR)/$(r)/r1.json)
	$(R1) plot $(foreach r,$(RL_RUNS),$(RUN_DIR)/$(r)/metrics.jsonl) --out $@

demo: $(STAMP)
	$(if $(filter 1,$(DEMO_JOBS)),,OMP_NUM_THREADS=1) $(MAKE) --no-print-directory -j$(DEMO_JOBS) \
	  $(RUN_DIR)/summary.json $(RUN_DIR)/curves.png DEMO_STARTED=$(DEMO_STARTED)
	@cat $(RUN_DIR)/summary.md
	@echo "plots: $(RUN_DIR)/curves.png  checkpoints and metrics: $(RUN_DIR)/*/"
.PHONY: demo
