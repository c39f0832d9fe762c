"""Model cards and eval provenance: every checkpoint's README.md says what r1.json records about
it and the evals run on it; think-format checkpoints carry R1's sampling settings; a report says
what it measured."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import run_cli, write_jsonl
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig

from r1cli import __version__
from r1cli.commands.sft import sft
from r1cli.data.outputs import model_fingerprint
from r1cli.data.records import file_sha256
from r1cli.report.card import render_card, think_format_reason
from r1cli.train.checkpoint import describe_parent

FAST = {"lr": 3e-3, "warmup": 0, "batch_size": 4, "max_length": 128, "device": "cpu"}


def options_block(card: str) -> dict:
    return json.loads(re.search(r"```json\n(.*?)\n```", card, re.DOTALL).group(1))


def test_an_sft_checkpoint_card_says_what_r1_json_records(tmp_path, tiny_config, chat_records):
    data = write_jsonl(tmp_path / "d.jsonl", chat_records)
    out = tmp_path / "cold-start"
    sft(str(tiny_config), [str(data)], out, max_steps=2, save_every=1, **FAST)
    lineage = json.loads((out / "r1.json").read_text())
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and card.data.tags == ["r1", "sft", "reasoning"]
    assert card.data.base_model is None  # pre-trained from a config: no hub model to name
    text = card.text
    assert text.startswith("\n# cold-start\n") and "pre-training from a model config" in text
    assert f"| `{data.resolve()}` |  |  | `{file_sha256(data)}` |" in text  # each input with its hash
    assert options_block(text) == lineage["options"]
    assert f"| loss | {lineage['metrics']['loss']:.4g} |" in text and "## Metrics at step 2" in text
    assert "No `r1 eval` report" in text and "hf upload YOUR-NAME/cold-start" in text
    # The intermediate checkpoint has its own card, of its own step.
    step_one = ModelCard.load(out / "checkpoints" / "step-000001" / "README.md").text
    assert "# cold-start-step-000001" in step_one and "## Metrics at step 1" in step_one


def test_think_format_checkpoints_get_r1_sampling_in_generation_config(tmp_path, tiny_config, chat_records):
    sft(str(tiny_config), [str(write_jsonl(tmp_path / "think.jsonl", chat_records))], tmp_path / "think", max_steps=1, save_every=0, **FAST)
    plain = [{"messages": [{"role": "user", "content": f"Say {n}."}, {"role": "assistant", "content": str(n)}]} for n in range(8)]
    sft(str(tiny_config), [str(write_jsonl(tmp_path / "plain.jsonl", plain))], tmp_path / "plain", max_steps=1, save_every=0, **FAST)
    think = GenerationConfig.from_pretrained(tmp_path / "think")
    assert (think.do_sample, think.temperature, think.top_p) == (True, 0.6, 0.95)
    lineage = json.loads((tmp_path / "think" / "r1.json").read_text())
    assert lineage["sampling_defaults"]["reason"] == "100% of its training examples close a think block with `</think>`"
    assert not GenerationConfig.from_pretrained(tmp_path / "plain").do_sample
    assert "did not train the think format" in (tmp_path / "plain" / "README.md").read_text()
    assert json.loads((tmp_path / "plain" / "r1.json").read_text())["sampling_defaults"] is None


def test_grpo_rewarding_the_format_gets_r1_sampling_and_one_without_does_not(tmp_path, tiny_checkpoint):
    from r1cli.commands.grpo import grpo

    prompts = str(write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"{n} plus 2?", "answer": str(n + 2)} for n in range(4)]))
    settings = {"steps": 1, "prompts_per_step": 2, "num_generations": 2, "max_new_tokens": 4, "device": "cpu", "save_every": 0,
                "log_samples_every": 0}
    grpo(str(tiny_checkpoint), prompts, tmp_path / "zero", ["accuracy", "format"], **settings)
    grpo(str(tiny_checkpoint), prompts, tmp_path / "other", ["accuracy"], **settings)
    assert GenerationConfig.from_pretrained(tmp_path / "zero").temperature == 0.6
    assert ModelCard.load(tmp_path / "zero" / "README.md").data.tags == ["r1", "grpo", "reasoning"]
    assert not GenerationConfig.from_pretrained(tmp_path / "other").do_sample
    assert ModelCard.load(tmp_path / "other" / "README.md").data.tags == ["r1", "grpo"]


def test_the_think_format_rule():
    assert think_format_reason(template="r1-zero") == "trained with --template r1-zero"
    assert think_format_reason(template="auto", rewards=("accuracy", "format=0.5")) == "rewarded for the think format (--reward format)"
    assert think_format_reason(template="auto", rewards=("accuracy", "tags")).endswith("(--reward tags)")
    assert think_format_reason(template="auto", rewards=("accuracy", "language")) is None
    assert think_format_reason(template="chat", think_share=0.5) is not None and think_format_reason(template="chat", think_share=0.49) is None


def test_base_model_and_hub_datasets_go_to_the_front_matter(tmp_path):
    assert describe_parent("Qwen/Qwen2.5-0.5B")["base_model"] == "Qwen/Qwen2.5-0.5B"
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "r1.json").write_text(json.dumps({"command": "sft", "step": 9, "parent": {"path": "Qwen/Qwen2.5-0.5B",
                                                                                                   "base_model": "Qwen/Qwen2.5-0.5B"}}))
    child = describe_parent(str(tmp_path / "sft"))  # the lineage's hub model carries down the chain
    assert child == {"path": str(tmp_path / "sft"), "command": "sft", "step": 9, "base_model": "Qwen/Qwen2.5-0.5B"}
    lineage = {"command": "grpo", "parent": child, "options": {"lora_r": 8}, "step": 3, "metrics": {"reward": 0.5},
               "inputs": [{"path": "openai/gsm8k", "hub_dataset": "openai/gsm8k", "subset": "main", "split": "train", "rows": 7473,
                           "sha256": "ab" * 32}, {"path": "/x/general.jsonl", "sha256": "cd" * 32}],
               "sampling_defaults": None}
    card = ModelCard(render_card("r1-zero", lineage, {}))
    assert card.data.base_model == "Qwen/Qwen2.5-0.5B" and card.data.datasets == ["openai/gsm8k"]
    assert card.data.tags == ["r1", "grpo", "lora"]
    assert f"| `openai/gsm8k` | main / train | 7473 | `{'ab' * 32}` |" in card.text


@pytest.fixture
def r1_checkpoint(tmp_path, tiny_config, chat_records):
    sft(str(tiny_config), [str(write_jsonl(tmp_path / "d.jsonl", chat_records))], tmp_path / "ckpt", max_steps=1, save_every=0, **FAST)
    return tmp_path / "ckpt"


def test_eval_reports_provenance_and_adds_its_figures_to_the_model_card(tmp_path, r1_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"{n} plus 1?", "answer": str(n + 1)} for n in range(4)])
    fingerprint = model_fingerprint(str(r1_checkpoint))
    args = ["eval", str(r1_checkpoint), str(prompts), "--out", str(tmp_path / "r.json"), "--n", "2", "--max-new-tokens", "6",
            "--temperature", "0.7", "--seed", "3", "--device", "cpu"]
    status, _, err = run_cli(monkeypatch, capsys, *args)
    assert status == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    provenance = report["provenance"]
    assert provenance["model"]["path"] == str(r1_checkpoint.resolve()) and provenance["model"]["fingerprint"] == fingerprint
    assert provenance["model"]["made_by"]["command"] == "sft"
    assert provenance["data"] == [{"path": str(prompts.resolve()), "sha256": file_sha256(prompts)}]
    assert provenance["samples"]["sha256"] == file_sha256(tmp_path / "r.samples.jsonl")
    assert provenance["sampling"] == {"temperature": 0.7, "top_p": 0.95, "top_k": 0, "max_new_tokens": 6, "stop": []}
    assert (provenance["seed"], provenance["template"], provenance["template_used"]) == (3, "auto", "chat")
    assert provenance["engines"] == ["hf"] and provenance["r1_version"] == __version__ and provenance["n"] == 2
    assert provenance["k"] == [1, 2] and "torch" in provenance["libraries"]
    # The checkpoint's card now has the eval, and nothing that identifies the model changed:
    card = (r1_checkpoint / "README.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith(f"| `{(tmp_path / 'r.json').resolve()}`"))
    assert f"| {report['overall']['pass@1']:.4g} |" in row and str(prompts.resolve()) in row
    assert "temperature 0.7, top-p 0.95, up to 6 new tokens" in card
    assert model_fingerprint(str(r1_checkpoint)) == fingerprint
    status, _, err = run_cli(monkeypatch, capsys, *args)  # so a rerun resumes its samples rather than refusing them
    assert status == 0 and "is complete" in err
    assert len(json.loads((r1_checkpoint / "r1-evals.json").read_text())) == 1  # refreshed, not added twice


def test_the_fingerprint_changes_with_the_weights(tmp_path, r1_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "1 plus 1?", "answer": "2"}])
    common = [str(prompts), "--n", "1", "--max-new-tokens", "2", "--device", "cpu"]
    assert run_cli(monkeypatch, capsys, "eval", str(r1_checkpoint), *common, "--out", str(tmp_path / "a.json"))[0] == 0
    weights = load_file(r1_checkpoint / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + torch.full_like(weights[name], 1e-3)
    save_file(weights, r1_checkpoint / "model.safetensors", metadata={"format": "pt"})
    assert run_cli(monkeypatch, capsys, "eval", str(r1_checkpoint), *common, "--out", str(tmp_path / "b.json"))[0] == 0
    before, after = (json.loads((tmp_path / f"{n}.json").read_text())["provenance"]["model"]["fingerprint"] for n in "ab")
    assert before != after and after == model_fingerprint(str(r1_checkpoint))


def test_scoring_samples_from_elsewhere_records_what_is_known(tmp_path, monkeypatch, capsys):
    samples = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "1+1?", "answer": "2", "completion": "<think>1+1=2</think> \\boxed{2}"}])
    assert run_cli(monkeypatch, capsys, "eval", "--samples", str(samples), "--out", str(tmp_path / "r.json"))[0] == 0
    provenance = json.loads((tmp_path / "r.json").read_text())["provenance"]
    assert provenance["model"] is None and provenance["sampling"] is None and provenance["seed"] is None
    assert provenance["samples"] == {"path": str(samples.resolve()), "sha256": file_sha256(samples)}
