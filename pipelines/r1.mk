# R1: cold start -> reasoning RL -> rejection sampling -> SFT on reasoning + general data from the
# base -> RL on reasoning and general prompts. Each arrow below is one file target; each stage's
# options are its file in RECIPES (recipes/toy: cold-start, r1-reasoning, rejection-sample,
# rejection-filter, r1-sft, r1).
#   make r1                         on the toy world
#   make -n r1                      print the commands

# 1. Cold start: SFT on a few hundred clean, readable chains of thought.
$(RUN_DIR)/cold-start/r1.json: $(call done,$(BASE)) $(COLD_START) $(RECIPES)/cold-start.yaml
	$(R1) sft $(BASE) $(COLD_START) --out $(RUN_DIR)/cold-start --config $(RECIPES)/cold-start.yaml $(SFT_ARGS) --seed $(TOY_SEED)

# 2. Reasoning RL: accuracy, format, and the language-consistency reward.
$(RUN_DIR)/r1-reasoning/r1.json: $(RUN_DIR)/cold-start/r1.json $(PROMPTS) $(RECIPES)/r1-reasoning.yaml
	$(R1) grpo $(RUN_DIR)/cold-start $(PROMPTS) --out $(RUN_DIR)/r1-reasoning --config $(RECIPES)/r1-reasoning.yaml \
	  $(call given,--steps,$(REASONING_STEPS)) $(GRPO_ARGS) --seed $(TOY_SEED)

# 3. Rejection sampling: N samples per prompt; keep the correct, well-formatted, one-language ones.
$(RUN_DIR)/rejection/samples.jsonl: $(RUN_DIR)/r1-reasoning/r1.json $(PROMPTS) $(RECIPES)/rejection-sample.yaml
	$(R1) sample $(RUN_DIR)/r1-reasoning $(PROMPTS) --out $@ --config $(RECIPES)/rejection-sample.yaml \
	  $(call given,--n,$(N)) $(SAMPLE_ARGS) --seed $(TOY_SEED)

$(RUN_DIR)/rejection/reasoning.jsonl: $(RUN_DIR)/rejection/samples.jsonl $(RECIPES)/rejection-filter.yaml
	$(R1) filter $< --out $@ --config $(RECIPES)/rejection-filter.yaml $(FILTER_ARGS)

# 4. Mix: reasoning 75%, general 25%.
$(RUN_DIR)/rejection/mix.jsonl: $(RUN_DIR)/rejection/reasoning.jsonl $(GENERAL)
	$(R1) mix $(RUN_DIR)/rejection/reasoning.jsonl:3 $(GENERAL):1 --total $(MIX_TOTAL) --out $@ --seed $(TOY_SEED)

# 5. SFT from the base (not from the RL model) on the mix, 2 epochs.
$(RUN_DIR)/r1-sft/r1.json: $(call done,$(BASE)) $(RUN_DIR)/rejection/mix.jsonl $(RECIPES)/r1-sft.yaml
	$(R1) sft $(BASE) $(RUN_DIR)/rejection/mix.jsonl --out $(RUN_DIR)/r1-sft --config $(RECIPES)/r1-sft.yaml $(SFT_ARGS) --seed $(TOY_SEED)

# 6. Final RL on reasoning and general prompts: rule rewards plus the preference reward.
$(RUN_DIR)/rejection/rl-prompts.jsonl: $(PROMPTS) $(GENERAL_PROMPTS)
	$(R1) mix $(PROMPTS):3 $(GENERAL_PROMPTS):1 --total $(FINAL_PROMPTS_TOTAL) --out $@ --seed $(TOY_SEED)

# PREFERENCE, when set, replaces the file's rewards by the rule rewards and itself.
$(RUN_DIR)/r1/r1.json: $(RUN_DIR)/r1-sft/r1.json $(RUN_DIR)/rejection/rl-prompts.jsonl $(RECIPES)/r1.yaml
	$(R1) grpo $(RUN_DIR)/r1-sft $(RUN_DIR)/rejection/rl-prompts.jsonl --out $(RUN_DIR)/r1 --config $(RECIPES)/r1.yaml \
	  $(if $(strip $(PREFERENCE)),--reward accuracy --reward format --reward language --reward $(PREFERENCE)) \
	  $(call given,--steps,$(FINAL_STEPS)) $(GRPO_ARGS) --seed $(TOY_SEED)

r1: $(RUN_DIR)/r1/r1.json
.PHONY: r1
