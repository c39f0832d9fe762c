# R1-Zero: GRPO straight on the base with rule rewards only (answer accuracy and the think format).
#   make r1-zero                                  on the toy world
#   make r1-zero BASE=ckpt PROMPTS=train.jsonl GRPO_ARGS="..."   on your own model and data

$(RUN_DIR)/r1-zero/r1.json: $(call done,$(BASE)) $(PROMPTS)
	$(R1) grpo $(BASE) $(PROMPTS) --out $(RUN_DIR)/r1-zero --reward accuracy --reward format \
	  --steps $(STEPS) $(GRPO_ARGS) --seed $(TOY_SEED)

r1-zero: $(RUN_DIR)/r1-zero/r1.json
.PHONY: r1-zero
