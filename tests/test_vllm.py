"""The vLLM engine, against a fake `vllm` (tests/fakes/vllm) that records what it is asked; and
for real where vLLM is installed (the `gpu`-marked test; vLLM is not on r1's CI or GPU machine)."""

import copy
import gc
import importlib.util
import json
import sys
import weakref
from pathlib import Path

import pytest
import torch
from conftest import run_cli, write_jsonl

from r1cli.engines.base import SamplingOptions
from r1cli.engines.sampling import request_seeds
from r1cli.errors import UserError

FAKE_VLLM = Path(__file__).parent / "fakes" / "vllm" / "__init__.py"
INSTALL_LINE = ("--engine vllm needs vLLM, which is not installed: make install-vllm in r1's checkout (vLLM 0.32.0 with its torch 2.13.0), "
                "or pip install vllm==0.32.0")
RECORD_FIELDS = {"id", "prompt", "answer", "sample", "completion", "reasoning", "response", "finish_reason", "completion_tokens"}


@pytest.fixture
def fake_vllm(monkeypatch):
    """The fake module as `vllm`, for this test only (monkeypatch takes it out of sys.modules after)."""
    spec = importlib.util.spec_from_file_location("vllm", FAKE_VLLM, submodule_search_locations=[str(FAKE_VLLM.parent)])
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "vllm", module)
    spec.loader.exec_module(module)
    return module


def calls(fake, kind: str) -> list[dict]:
    return [c for c in fake.CALLS if c["call"] == kind]


def requests_of(fake) -> list[tuple[dict, object, object]]:
    """(prompt, SamplingParams, RequestOutput) of every request vLLM was sent, in order."""
    return [r for c in calls(fake, "generate") for r in zip(c["prompts"], c["params"], c["outputs"])]


def engine(fake, **options):
    from r1cli.engines.vllm import VLLMEngine

    return VLLMEngine("some/checkpoint", **options)


def tiny_model(tiny_config):
    from r1cli.modeling import load_model

    model, _ = load_model(str(tiny_config), seed=0)
    return model


# --- without vLLM ---------------------------------------------------------------------------------


def test_without_vllm_the_engine_says_how_to_install_it(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` fails, installed or not
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    status, _, err = run_cli(monkeypatch, capsys, "sample", str(tiny_checkpoint), str(prompts), "--out", str(tmp_path / "s.jsonl"), "--engine", "vllm")
    assert status == 2 and INSTALL_LINE in err
    assert len(err.strip().splitlines()) == 1


def test_a_vllm_older_than_0_10_is_refused_with_the_version_found(fake_vllm):
    fake_vllm.__version__ = "0.9.2"
    with pytest.raises(UserError, match=r"needs vLLM >= 0\.10 \(found 0\.9\.2\): make install-vllm in r1's checkout"):
        engine(fake_vllm)
    assert not calls(fake_vllm, "LLM")


# --- building the LLM -----------------------------------------------------------------------------


def test_the_llm_is_built_for_temperature_scaled_logprobs_and_weight_loading(fake_vllm):
    engine(fake_vllm, dtype="bf16", seed=7, gpu_memory_utilization=0.5, max_model_len=1024)
    assert calls(fake_vllm, "LLM") == [{
        "call": "LLM", "model": "some/checkpoint", "dtype": "bfloat16", "seed": 7, "gpu_memory_utilization": 0.5,
        "logprobs_mode": "processed_logprobs", "worker_extension_cls": "r1cli.engines.vllm.WeightLoaderExtension",
        "max_model_len": 1024,
    }]


@pytest.mark.parametrize(("ours", "theirs"), [("auto", "bfloat16"), ("bf16", "bfloat16"), ("fp16", "float16"), ("fp32", "float32")])
def test_dtype_names_are_vllms(fake_vllm, ours, theirs):
    engine(fake_vllm, dtype=ours)
    assert calls(fake_vllm, "LLM")[0]["dtype"] == theirs


def test_an_unknown_dtype_is_a_user_error_listing_the_choices(fake_vllm):
    with pytest.raises(UserError, match=r"--dtype 'int8' is not one of: auto, fp32, bf16, fp16"):
        engine(fake_vllm, dtype="int8")


# --- sampling requests ----------------------------------------------------------------------------


def test_each_completion_is_one_seeded_token_id_request_with_our_options(fake_vllm):
    options = SamplingOptions(temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=12, stop=("</answer>", "\n\n"), seed=3)
    results = engine(fake_vllm).generate_ids([[5, 6, 7], [8, 9]], options, seeds=[[11, 12, 13], [21, 22, 23]])

    assert [len(r) for r in results] == [3, 3]
    (call,) = calls(fake_vllm, "generate")
    assert call["use_tqdm"] is False
    assert call["prompts"] == [{"prompt_token_ids": [5, 6, 7]}] * 3 + [{"prompt_token_ids": [8, 9]}] * 3
    assert [p.seed for p in call["params"]] == [11, 12, 13, 21, 22, 23]
    for params in call["params"]:
        assert (params.n, params.temperature, params.top_p, params.top_k, params.max_tokens) == (1, 0.7, 0.9, -1, 12)
        assert params.stop == ["</answer>", "\n\n"] and params.include_stop_str_in_output is True
        assert params.logprobs == 0 and params.detokenize is True and params.skip_special_tokens is True


@pytest.mark.parametrize(("top_k", "vllm_top_k"), [(0, -1), (1, 1), (40, 40)])
def test_top_k_zero_is_off_which_vllm_spells_minus_one(fake_vllm, top_k, vllm_top_k):
    engine(fake_vllm).generate_ids([[1, 2]], SamplingOptions(top_k=top_k, max_new_tokens=4))
    assert [p.top_k for _, p, _ in requests_of(fake_vllm)] == [vllm_top_k]


def test_no_stop_strings_is_vllms_none(fake_vllm):
    engine(fake_vllm).generate_ids([[1, 2]], SamplingOptions(max_new_tokens=4))
    assert [p.stop for _, p, _ in requests_of(fake_vllm)] == [None]


def test_without_seeds_a_prompt_gets_n_completions_seeded_like_the_built_in_engine(fake_vllm):
    options = SamplingOptions(max_new_tokens=4, seed=9)
    results = engine(fake_vllm).generate_ids([[1, 2], [3]], options, n=2)
    assert [len(r) for r in results] == [2, 2]
    assert [p.seed for _, p, _ in requests_of(fake_vllm)] == [s for row in request_seeds(2, 2, 9) for s in row]
    assert [p.n for _, p, _ in requests_of(fake_vllm)] == [1, 1, 1, 1]


def test_text_prompts_are_tokenized_without_special_tokens(fake_vllm):
    engine(fake_vllm).generate(["hi"], SamplingOptions(max_new_tokens=4))
    assert [prompt for prompt, _, _ in requests_of(fake_vllm)] == [{"prompt_token_ids": [ord("h"), ord("i")]}]


def test_no_seeds_asks_vllm_nothing(fake_vllm):
    assert engine(fake_vllm).generate_ids([[1], [2]], SamplingOptions(), seeds=[[], []]) == [[], []]
    assert not calls(fake_vllm, "generate")


def test_seed_lists_must_match_the_prompts(fake_vllm):
    with pytest.raises(ValueError, match="1 seed lists for 2 prompts"):
        engine(fake_vllm).generate_ids([[1], [2]], SamplingOptions(), seeds=[[1]])


# --- completions ----------------------------------------------------------------------------------


def test_completions_are_vllms_ids_text_sampled_token_logprobs_and_finish_reasons(fake_vllm):
    options = SamplingOptions(temperature=0.5, max_new_tokens=6)
    (completions,) = engine(fake_vllm).generate_ids([[1, 2, 3]], options, seeds=[list(range(40))])
    outputs = [request.outputs[0] for _, _, request in requests_of(fake_vllm)]
    assert len(completions) == len(outputs) == 40
    for completion, output in zip(completions, outputs):
        assert completion.text == output.text and completion.token_ids == output.token_ids
        assert completion.logprobs == [step[token].logprob for step, token in zip(output.logprobs, output.token_ids)]
        assert completion.finish_reason == output.finish_reason
    reasons = {c.finish_reason for c in completions}
    assert reasons == {"stop", "length"}  # both occur among 40 seeds: each is mapped
    assert all(len(c.token_ids) == 6 for c in completions if c.finish_reason == "length")
    assert all(c.token_ids[-1] == fake_vllm.EOS_ID for c in completions if c.finish_reason == "stop")


def test_the_same_seed_gives_the_same_completion_whatever_else_is_in_the_batch(fake_vllm):
    vllm_engine = engine(fake_vllm)
    options = SamplingOptions(temperature=1.0, max_new_tokens=8)
    alone = vllm_engine.generate_ids([[4, 5]], options, seeds=[[77]])[0][0]
    batched = vllm_engine.generate_ids([[9], [4, 5]], options, seeds=[[1, 2], [76, 77, 77, 78]])[1]
    assert batched[1] == alone and batched[2] == alone
    assert batched[0] != alone and batched[3] != alone


def test_stop_strings_end_the_completion_and_stay_in_its_text(fake_vllm):
    vllm_engine = engine(fake_vllm)
    free = vllm_engine.generate_ids([[1]], SamplingOptions(max_new_tokens=30), seeds=[[5]])[0][0]
    stop = next(ch for ch in free.text[1:] if ch.strip())  # a character the completion goes on to write
    cut = vllm_engine.generate_ids([[1]], SamplingOptions(max_new_tokens=30, stop=(stop,)), seeds=[[5]])[0][0]
    assert cut.text == free.text[: free.text.index(stop) + 1] and cut.text.endswith(stop)
    assert cut.finish_reason == "stop" and cut.token_ids == free.token_ids[: len(cut.token_ids)]


def test_a_finish_reason_other_than_stop_or_length_is_an_error(fake_vllm, monkeypatch):
    vllm_engine = engine(fake_vllm)
    real_generate = fake_vllm.LLM.generate

    def aborting(self, *args, **kwargs):
        outputs = real_generate(self, *args, **kwargs)
        for request in outputs:
            request.outputs[0].finish_reason = "abort"
        return outputs

    monkeypatch.setattr(fake_vllm.LLM, "generate", aborting)
    with pytest.raises(RuntimeError, match="finish_reason 'abort'"):
        vllm_engine.generate_ids([[1]], SamplingOptions(max_new_tokens=4))


def test_missing_logprobs_are_an_error_not_a_short_list(fake_vllm, monkeypatch):
    vllm_engine = engine(fake_vllm)
    real_generate = fake_vllm.LLM.generate

    def dropping_last_logprob(self, *args, **kwargs):
        outputs = real_generate(self, *args, **kwargs)
        for request in outputs:
            request.outputs[0].logprobs = request.outputs[0].logprobs[:-1]
        return outputs

    monkeypatch.setattr(fake_vllm.LLM, "generate", dropping_last_logprob)
    with pytest.raises(RuntimeError, match="log-probabilities for"):
        vllm_engine.generate_ids([[1]], SamplingOptions(max_new_tokens=4))


# --- weights --------------------------------------------------------------------------------------


def loaded_by(vllm_engine) -> dict[str, torch.Tensor]:
    """What the (fake) worker's model was given, by name: where the extension's method ran."""
    return vllm_engine.llm.worker.model_runner.model.loaded


def test_refresh_weights_loads_every_named_weight_then_resets_the_prefix_cache(fake_vllm, tiny_config):
    model = tiny_model(tiny_config)
    vllm_engine = engine(fake_vllm, dtype="fp32")
    vllm_engine.refresh_weights(model)

    loaded = loaded_by(vllm_engine)
    expected = dict(model.named_parameters())
    assert sorted(loaded) == sorted(expected)
    assert all(torch.equal(loaded[name], weight.detach()) for name, weight in expected.items())
    rpcs = calls(fake_vllm, "collective_rpc")
    assert rpcs and all(c["method"] == "r1_load_weights" for c in rpcs)
    assert [c["call"] for c in fake_vllm.CALLS][-1] == "reset_prefix_cache"

    with torch.no_grad():  # a training step later: the engine is given the new weights
        for weight in model.parameters():
            weight.add_(1.0)
    vllm_engine.refresh_weights(model)
    assert all(torch.equal(loaded[name], weight.detach()) for name, weight in model.named_parameters())
    assert len(calls(fake_vllm, "reset_prefix_cache")) == 2


def test_refresh_weights_sends_the_engines_dtype_in_bounded_shards(fake_vllm, tiny_config, monkeypatch):
    import r1cli.engines.vllm as vllm_engine_module

    monkeypatch.setattr(vllm_engine_module, "WEIGHT_SHARD_BYTES", 8192)
    model = tiny_model(tiny_config)
    vllm_engine = engine(fake_vllm, dtype="bf16")
    vllm_engine.refresh_weights(model)

    loaded = loaded_by(vllm_engine)
    assert all(loaded[name].dtype == torch.bfloat16 and torch.equal(loaded[name], w.detach().to(torch.bfloat16))
               for name, w in model.named_parameters())
    shards = [c["names"] for c in calls(fake_vllm, "load_weights")]
    assert len(shards) > 1 and sorted(n for shard in shards for n in shard) == sorted(dict(model.named_parameters()))
    sizes = [sum(loaded[n].nbytes for n in shard) for shard in shards]
    assert all(size <= 8192 or len(shard) == 1 for size, shard in zip(sizes, shards))


def test_refresh_weights_of_a_lora_model_loads_the_merged_weights_and_leaves_it_unmerged(fake_vllm, tiny_config):
    from peft import LoraConfig, get_peft_model

    base = tiny_model(tiny_config)
    names = sorted(dict(base.named_parameters()))
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a trained adapter (a fresh one is zero and would merge to nothing)
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(generator=torch.Generator().manual_seed(0))
    merged = dict(copy.deepcopy(model).merge_and_unload().named_parameters())

    vllm_engine = engine(fake_vllm, dtype="fp32")
    vllm_engine.refresh_weights(model)

    loaded = loaded_by(vllm_engine)
    assert sorted(loaded) == names == sorted(merged)
    assert all(torch.allclose(loaded[name], merged[name].detach()) for name in names)
    assert not torch.equal(loaded["model.layers.0.self_attn.q_proj.weight"], base.get_submodule("model.layers.0.self_attn.q_proj").base_layer.weight)
    assert not any(getattr(module, "merged", False) for module in model.modules())


# --- closing --------------------------------------------------------------------------------------


def test_close_releases_the_llm(fake_vllm):
    vllm_engine = engine(fake_vllm)
    llm = weakref.ref(vllm_engine.llm)
    vllm_engine.close()
    gc.collect()
    assert llm() is None
    with pytest.raises(RuntimeError, match="closed"):
        vllm_engine.generate_ids([[1]], SamplingOptions())
    vllm_engine.close()  # a second close is harmless


# --- the command line -----------------------------------------------------------------------------


def test_r1_sample_with_vllm_writes_n_records_per_prompt_from_per_sample_seeded_token_id_requests(tmp_path, tiny_checkpoint, fake_vllm, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "hi", "answer": "1"}, {"id": "b", "prompt": "yo", "answer": "2"}])
    status, _, err = run_cli(monkeypatch, capsys, "sample", str(tiny_checkpoint), str(prompts), "--out", str(tmp_path / "s.jsonl"),
                             "--engine", "vllm", "--n", "3", "--max-new-tokens", "8", "--seed", "5")
    assert status == 0, err

    records = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(records) == 6
    assert {(r["id"], r["sample"]) for r in records} == {(i, k) for i in "ab" for k in range(3)}
    assert all(RECORD_FIELDS <= set(r) for r in records)
    assert all(r["finish_reason"] in ("stop", "length") and 1 <= r["completion_tokens"] <= 8 for r in records)

    (llm,) = calls(fake_vllm, "LLM")
    assert llm["model"] == str(tiny_checkpoint) and llm["seed"] == 5 and llm["dtype"] == "bfloat16"
    requests = requests_of(fake_vllm)
    assert len(requests) == 6
    assert all(set(prompt) == {"prompt_token_ids"} and all(isinstance(i, int) for i in prompt["prompt_token_ids"]) for prompt, _, _ in requests)
    assert all(params.n == 1 and params.max_tokens == 8 for _, params, _ in requests)
    assert len({params.seed for _, params, _ in requests}) == 6  # one seed per (prompt, sample)

    by_prompt: dict[tuple[int, ...], list] = {}
    for prompt, _, request in requests:
        by_prompt.setdefault(tuple(prompt["prompt_token_ids"]), []).append(request.outputs[0])
    assert sorted(len(outputs) for outputs in by_prompt.values()) == [3, 3]  # two prompts, three samples each
    asked = sorted(sorted((o.text, len(o.token_ids)) for o in outputs) for outputs in by_prompt.values())
    written = sorted(sorted((r["completion"], r["completion_tokens"]) for r in records if r["id"] == i) for i in "ab")
    assert written == asked  # each record is vLLM's completion of its own prompt


@pytest.mark.gpu
def test_vllm_samples_match_the_record_contract(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    pytest.importorskip("vllm")
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi", "answer": "1"}, {"prompt": "yo", "answer": "2"}])
    status, _, err = run_cli(monkeypatch, capsys, "sample", str(tiny_checkpoint), str(prompts), "--out", str(tmp_path / "s.jsonl"),
                             "--engine", "vllm", "--n", "3", "--max-new-tokens", "8")
    assert status == 0, err
    records = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(records) == 6 and sorted({r["sample"] for r in records}) == [0, 1, 2]
    assert all(1 <= r["completion_tokens"] <= 8 and r["finish_reason"] in ("stop", "length") for r in records)


def test_the_install_hint_names_the_makefile_target_and_its_pinned_release():
    import re
    import subprocess

    from r1cli.engines.vllm import INSTALL_HINT

    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    pinned = re.search(r"^VLLM \?= vllm==(\S+)$", makefile, re.MULTILINE).group(1)
    torch_pin = re.search(r"^TORCH \?= torch==(\S+)$", makefile, re.MULTILINE).group(1)
    assert re.search(r"^install-vllm:", makefile, re.MULTILINE) and f"vLLM {pinned} with its torch {torch_pin}" in INSTALL_HINT
    assert f"pip install vllm=={pinned}" in INSTALL_HINT
    printed = subprocess.run(["make", "-n", "install-vllm"], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    assert printed.returncode == 0 and f'pip install -q "vllm=={pinned}" "torch=={torch_pin}" -e ".[dev,vllm]"' in printed.stdout
