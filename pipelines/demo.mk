# make demo: the whole story on the toy world, on this machine's CPU, in under fifteen minutes.
# Pre-training the base uses both cores alone; then two lanes run side by side. Every
# checkpoint is evaluated on the held-out prompts, and the RL curves plotted.

DEMO_STARTED := $(shell date +%s)
RL_RUNS ?= r1-zero r1-reasoning r1
# Two lanes of about equal length run side by side, one torch thread each: the R1 chain then
# distillation, and the student's pre-training (first: distillation needs it), R1-Zero and the
# other evaluations. (One make -j2 would not keep the long chain going first.)
DEMO_CHAIN ?= $(RUN_DIR)/eval/r1.json $(RUN_DIR)/eval/student-distill.json
DEMO_SIDE ?= $(RUN_DIR)/student-base/r1.json $(RUN_DIR)/eval/student-base.json $(RUN_DIR)/eval/base.json $(RUN_DIR)/eval/r1-zero.json

$(RUN_DIR)/summary.json: $(RUN_DIR)/eval/base.json $(RUN_DIR)/eval/r1-zero.json $(RUN_DIR)/eval/r1.json \
                         $(RUN_DIR)/eval/student-base.json $(RUN_DIR)/eval/student-distill.json
	$(R1) summary base=$(RUN_DIR)/eval/base.json r1-zero=$(RUN_DIR)/eval/r1-zero.json r1=$(RUN_DIR)/eval/r1.json \
	  student-base=$(RUN_DIR)/eval/student-base.json student-distill=$(RUN_DIR)/eval/student-distill.json \
	  --out $@ --markdown $(RUN_DIR)/summary.md --since $(DEMO_STARTED)

$(RUN_DIR)/curves.png: $(foreach r,$(RL_RUNS),$(RUN_DIR)/$(r)/r1.json)
	$(R1) plot $(foreach r,$(RL_RUNS),$(RUN_DIR)/$(r)/metrics.jsonl) --out $@

# One page to read the whole run: the table, each stage's options and curves, and the completions
# each RL stage logged, step by step.
$(RUN_DIR)/report.html: $(RUN_DIR)/summary.json $(foreach r,$(RL_RUNS),$(RUN_DIR)/$(r)/r1.json)
	$(R1) report $(RUN_DIR) --out $@

demo: $(STAMP)
	$(MAKE) --no-print-directory $(call done,$(BASE))
	export OMP_NUM_THREADS=1; $(MAKE) --no-print-directory $(DEMO_SIDE) & side=$$!; \
	  $(MAKE) --no-print-directory $(DEMO_CHAIN) || { wait $$side; exit 1; }; wait $$side
	$(MAKE) --no-print-directory $(RUN_DIR)/summary.json $(RUN_DIR)/curves.png $(RUN_DIR)/report.html DEMO_STARTED=$(DEMO_STARTED)
	@cat $(RUN_DIR)/summary.md
	@echo "report: $(RUN_DIR)/report.html  curves: $(RUN_DIR)/curves.png  checkpoints, metrics and samples: $(RUN_DIR)/*/"
.PHONY: demo
