# The toy world: its corpora and two pre-trained bases, the inputs every pipeline defaults to.
# Each stage is a file target (a checkpoint's r1.json is written last, a JSONL file appears whole),
# so make reruns only what is missing or older than its inputs, and a stage killed half-way
# resumes when make is run again.

# The toy world is made here, from nothing on the hub: offline (see the Makefile).
$(DATA_DIR)/manifest.json $(RUN_DIR)/base/r1.json $(RUN_DIR)/student-base/r1.json: export HF_HUB_OFFLINE ?= 1

# pretrain, cold_start, rl_prompts, eval, general and general_prompts (manifest.json comes last).
$(DATA_DIR)/manifest.json: | $(STAMP)
	$(R1) toy data $(DATA_DIR) --seed $(TOY_SEED)

$(DATA_DIR)/%.jsonl: $(DATA_DIR)/manifest.json ;

# A ~0.9M-parameter base pre-trained from scratch on the noisy corpus (~2.5 minutes on 2 cores),
# and a smaller student (~0.4M) pre-trained on the same corpus, for distillation.
$(RUN_DIR)/base/r1.json: $(DATA_DIR)/manifest.json
	$(R1) toy base $(RUN_DIR)/base --data $(DATA_DIR)/pretrain.jsonl --seed $(TOY_SEED)

$(RUN_DIR)/student-base/r1.json: $(DATA_DIR)/manifest.json
	$(R1) toy base $(RUN_DIR)/student-base --size student --data $(DATA_DIR)/pretrain.jsonl --seed $(TOY_SEED)

# Any checkpoint of the run, evaluated on the held-out prompts: pass@1 over EVAL_N samples,
# pass@EVAL_N, maj@EVAL_N, format rate and language consistency (per language with --by lang).
# Its options: RECIPES/eval.yaml; EVAL_N, when set, is both the samples and the largest k.
evaluate = $(R1) eval $(1) $(EVAL_DATA) --out $(2) --config $(RECIPES)/eval.yaml \
  $(if $(strip $(EVAL_N)),--n $(EVAL_N) --k 1,$(EVAL_N)) $(EVAL_ARGS)

$(RUN_DIR)/eval/%.json: $(RUN_DIR)/%/r1.json $(EVAL_DATA) $(RECIPES)/eval.yaml
	$(call evaluate,$(RUN_DIR)/$*,$@)

# The pipelines' starting points, wherever BASE and STUDENT are.
$(RUN_DIR)/eval/base.json: $(call done,$(BASE)) $(EVAL_DATA) $(RECIPES)/eval.yaml
	$(call evaluate,$(BASE),$@)

$(RUN_DIR)/eval/student-base.json: $(call done,$(STUDENT)) $(EVAL_DATA) $(RECIPES)/eval.yaml
	$(call evaluate,$(STUDENT),$@)
