# Distillation: the R1 model's correct traces taught to a smaller student by SFT.
#   make distill                                       toy teacher -> toy student
#   make distill TEACHER=ckpt STUDENT=small-ckpt PROMPTS=train.jsonl

$(RUN_DIR)/student-distill/r1.json: $(call done,$(TEACHER)) $(call done,$(STUDENT)) $(PROMPTS)
	$(R1) distill $(TEACHER) $(STUDENT) $(PROMPTS) --out $(RUN_DIR)/student-distill --n $(N) \
	  $(DISTILL_ARGS) --seed $(TOY_SEED)

distill: $(RUN_DIR)/student-distill/r1.json
.PHONY: distill
