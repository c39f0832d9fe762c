# Distillation: the R1 model's correct traces taught to a smaller student by SFT.
#   make distill                                       toy teacher -> toy student (recipes/toy/distill.yaml)
#   make distill TEACHER=ckpt STUDENT=small-ckpt PROMPTS=train.jsonl RECIPES=DIR

$(RUN_DIR)/student-distill/r1.json: $(call done,$(TEACHER)) $(call done,$(STUDENT)) $(PROMPTS) $(RECIPES)/distill.yaml
	$(R1) distill $(TEACHER) $(STUDENT) $(PROMPTS) --out $(RUN_DIR)/student-distill --config $(RECIPES)/distill.yaml \
	  $(call given,--n,$(N)) $(DISTILL_ARGS) --seed $(TOY_SEED)

distill: $(RUN_DIR)/student-distill/r1.json
.PHONY: distill
