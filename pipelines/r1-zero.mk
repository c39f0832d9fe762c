# R1-Zero: GRPO straight on the base with rule rewards only (answer accuracy and the think format).
#   make r1-zero                                  on the toy world (recipes/toy/r1-zero.yaml)
#   make r1-zero RECIPES=recipes/qwen2.5-1.5b-gsm8k BASE=Qwen/Qwen2.5-1.5B PROMPTS=train.jsonl   on a real model

$(RUN_DIR)/r1-zero/r1.json: $(call done,$(BASE)) $(PROMPTS) $(RECIPES)/r1-zero.yaml
	$(R1) grpo $(BASE) $(PROMPTS) --out $(RUN_DIR)/r1-zero --config $(RECIPES)/r1-zero.yaml \
	  $(call given,--steps,$(STEPS)) $(GRPO_ARGS) --seed $(TOY_SEED)

r1-zero: $(RUN_DIR)/r1-zero/r1.json
.PHONY: r1-zero
