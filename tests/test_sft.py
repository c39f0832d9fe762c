import json

import pytest
import torch
from conftest import run_cli, write_jsonl
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from r1cli.commands.sft import sft
from r1cli.data.records import Record, file_sha256
from r1cli.data.sft_rows import collate, encode_records, to_rows
from r1cli.errors import UserError
from r1cli.modeling import load_model
from r1cli.recipes import sft as sft_module
from r1cli.recipes.sft import token_loss_sum

# Exactness is a CPU property (the GPU default is bf16 autocast), so these runs pin the CPU.
FAST = {"lr": 3e-3, "warmup": 0, "batch_size": 4, "max_length": 128, "save_every": 0, "device": "cpu"}


def weights(directory) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


def metrics(directory) -> list[dict]:
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "records",
    [
        [{"messages": [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello!"}]}] * 8,
        [{"prompt": "Write cat backwards.", "completion": "tac"}] * 8,
        [{"text": "3 plus 4 is 7. 7 minus 2 is 5."}] * 8,
    ],
    ids=["messages", "prompt_completion", "text"],
)
def test_each_record_format_trains(tmp_path, tiny_config, records):
    data = write_jsonl(tmp_path / "d.jsonl", records)
    sft(str(tiny_config), [str(data)], tmp_path / "out", max_steps=15, **{**FAST, "lr": 1e-2, "schedule": "constant"})
    losses = [m["loss"] for m in metrics(tmp_path / "out")]
    assert len(losses) == 15 and losses[-1] < 0.5 * losses[0]


def test_checkpoint_loads_with_plain_transformers_and_generates(tmp_path, tiny_config, chat_records):
    data = write_jsonl(tmp_path / "d.jsonl", chat_records)
    eval_data = write_jsonl(tmp_path / "e.jsonl", chat_records[:3])
    sft(str(tiny_config), [str(data)], tmp_path / "out", max_steps=3, eval_data=[str(eval_data)], seed=5, **FAST)
    out = tmp_path / "out"
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Say hello."}], tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1]
    lineage = json.loads((out / "r1.json").read_text())
    assert lineage["command"] == "sft" and lineage["step"] == 3 and lineage["seed"] == 5
    assert lineage["options"]["lr"] == FAST["lr"] and lineage["parent"]["path"] == str(tiny_config)
    assert [i["sha256"] for i in lineage["inputs"]] == [file_sha256(p) for p in (data, eval_data)]
    assert {"torch", "transformers", "python"} <= set(lineage["libraries"])
    assert "eval_loss" in lineage["metrics"] and lineage["metrics"]["loss"] == metrics(out)[-1]["loss"]
    assert {"step", "loss", "lr", "grad_norm", "tokens_per_s"} <= set(metrics(out)[0])


def trl_conversational(n: int) -> dict:
    return {"prompt": [{"role": "user", "content": f"Ann has {n} pens, gets 2. How many pens now?"}],
            "completion": [{"role": "assistant", "content": f"<think>{n} plus 2 is {n + 2}.</think> The answer is \\boxed{{{n + 2}}}."}]}


def test_trl_conversational_records_from_a_save_to_disk_split_train_and_load_back(tmp_path, tiny_config, monkeypatch, capsys):
    import datasets

    from r1cli.data.records import Record, rows_sha256

    train, test = [trl_conversational(n) for n in range(12)], [trl_conversational(n) for n in (20, 21)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(train), "test": datasets.Dataset.from_list(test)}).save_to_disk(str(tmp_path / "trl"))
    out = tmp_path / "out"
    status, _, err = run_cli(monkeypatch, capsys, "sft", str(tiny_config), str(tmp_path / "trl"), "--split", "train", "--eval-data",
                             str(tmp_path / "trl"), "--dataset-test-split", "test", "--out", str(out), "--max-steps", "15", "--lr", "1e-2",
                             "--schedule", "constant", "--warmup", "0", "--batch-size", "4", "--max-length", "128", "--save-every", "0",
                             "--device", "cpu")
    assert status == 0, err
    losses = [m["loss"] for m in metrics(out)]
    assert losses[-1] < 0.5 * losses[0]
    lineage = json.loads((out / "r1.json").read_text())
    assert lineage["options"]["split"] == "train" and lineage["options"]["eval_split"] == "test"
    assert [(i["split"], i["rows"], i["sha256"]) for i in lineage["inputs"]] == [("train", 12, rows_sha256(train)), ("test", 2, rows_sha256(test))]
    # The checkpoint loads back with plain transformers and has learnt the completions (only they carry loss).
    model, tokenizer = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    rows = to_rows(encode_records([Record.at(r, "t") for r in train], tokenizer, template="chat", max_length=128), max_length=128, packing=False)
    with torch.no_grad():
        loss = sum(token_loss_sum(model, collate([row], tokenizer.pad_token_id, "cpu"))[0].item() for row in rows) / sum(r.label_count for r in rows)
    assert loss < 0.5 * losses[0]
    assert lineage["metrics"]["eval_loss"] > 0


def test_packed_loss_equals_unpacked_loss(tiny_config):
    model, tokenizer = load_model(str(tiny_config), seed=1)
    model.eval()
    records = [Record.at({"text": "5 plus 2 is 7. " * n}, f"t:{n}") for n in (1, 3, 2, 5)]
    examples = encode_records(records, tokenizer, template="plain", max_length=256)
    with torch.no_grad():
        unpacked = sum(token_loss_sum(model, collate([row], tokenizer.pad_token_id, "cpu"))[0] for row in to_rows(examples, max_length=256, packing=False))
        packed_rows = to_rows(examples, max_length=256, packing=True)
        packed = token_loss_sum(model, collate(packed_rows, tokenizer.pad_token_id, "cpu"))[0]
    assert len(packed_rows) == 1
    assert packed.item() == pytest.approx(unpacked.item(), rel=1e-5)


def test_batch_times_accumulation_gives_the_same_trajectory(tmp_path, tiny_config, chat_records):
    data = write_jsonl(tmp_path / "d.jsonl", chat_records[:8])
    options = dict(FAST, max_steps=4)
    sft(str(tiny_config), [str(data)], tmp_path / "big", **{**options, "batch_size": 8, "grad_accum": 1})
    sft(str(tiny_config), [str(data)], tmp_path / "accum", **{**options, "batch_size": 1, "grad_accum": 8})
    for a, b in zip(metrics(tmp_path / "big"), metrics(tmp_path / "accum")):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    big, accum = weights(tmp_path / "big"), weights(tmp_path / "accum")
    assert max((big[k] - accum[k]).abs().max().item() for k in big) < 1e-5


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, tiny_config, chat_records, monkeypatch):
    data = write_jsonl(tmp_path / "d.jsonl", chat_records)
    options = dict(FAST, max_steps=7, save_every=3)
    sft(str(tiny_config), [str(data)], tmp_path / "whole", **options)

    real_step, calls = sft_module.train_step, {"n": 0}

    def dies_at_step_five(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(sft_module, "train_step", dies_at_step_five)
    with pytest.raises(KeyboardInterrupt):
        sft(str(tiny_config), [str(data)], tmp_path / "resumed", **options)
    assert not (tmp_path / "resumed" / "r1.json").exists()  # the killed run does not look finished
    assert (tmp_path / "resumed" / "checkpoints" / "step-000003" / "r1.json").exists()
    monkeypatch.setattr(sft_module, "train_step", real_step)
    sft(str(tiny_config), [str(data)], tmp_path / "resumed", **options)
    whole, resumed = weights(tmp_path / "whole"), weights(tmp_path / "resumed")
    assert max((whole[k] - resumed[k]).abs().max().item() for k in whole) < 1e-5
    assert [m["step"] for m in metrics(tmp_path / "resumed")] == list(range(1, 8))
    assert [m["loss"] for m in metrics(tmp_path / "resumed")] == pytest.approx([m["loss"] for m in metrics(tmp_path / "whole")], rel=1e-6)


def test_lora_writes_adapter_and_merged_model_that_agree(tmp_path, tiny_config, chat_records):
    data = write_jsonl(tmp_path / "d.jsonl", chat_records)
    sft(str(tiny_config), [str(data)], tmp_path / "base", max_steps=1, **FAST)
    sft(str(tmp_path / "base"), [str(data)], tmp_path / "lora", max_steps=4, lora_r=4, lora_targets="q_proj,v_proj", **FAST)
    from peft import PeftModel

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "lora")
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), tmp_path / "lora" / "adapter")
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    tokens = torch.tensor([[4, 10, 20, 30, 40, 50]])
    with torch.no_grad():
        merged_logits, adapted_logits, base_logits = (m(tokens).logits for m in (merged, adapted, base))
    assert torch.allclose(merged_logits, adapted_logits, atol=1e-5)
    assert not torch.allclose(merged_logits, base_logits, atol=1e-4)  # the adapter learned something


def test_rerunning_a_finished_run_does_nothing_and_other_options_are_refused(tmp_path, tiny_config, chat_records, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", chat_records)
    args = ["sft", str(tiny_config), str(data), "--out", str(tmp_path / "o"), "--max-steps", "2", "--lr", "0.001"]
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    status, _, err = run_cli(monkeypatch, capsys, *args)
    assert status == 0 and "already complete" in err
    status, _, err = run_cli(monkeypatch, capsys, *args[:-1], "0.002")
    assert status == 2 and "made with other settings (--lr: 0.001 there, 0.002 now)" in err


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "fine"}\n{"text": "cut\n', "bad.jsonl:2: not valid JSON"),
        ('{"question": "q"}\n', "bad.jsonl:1: not a training record"),
        ('{"messages": [{"role": "user", "content": "hi"}]}\n', "bad.jsonl:1: 'messages' has no assistant turn"),
        ("\n", "bad.jsonl: no records (the input is empty)"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(tmp_path, tiny_config, monkeypatch, capsys, content, message):
    (tmp_path / "bad.jsonl").write_text(content)
    status, out, err = run_cli(monkeypatch, capsys, "sft", str(tiny_config), str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o"))
    assert status == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o" / "r1.json").exists()


def test_bad_model_and_options_are_user_errors(tmp_path, tiny_config, chat_records, monkeypatch, capsys):
    data = str(write_jsonl(tmp_path / "d.jsonl", chat_records))
    status, _, err = run_cli(monkeypatch, capsys, "sft", str(tmp_path / "nowhere"), data, "--out", str(tmp_path / "o"))
    assert status == 2 and "no such checkpoint directory or config file" in err
    status, _, err = run_cli(monkeypatch, capsys, "sft", str(tiny_config), data, "--out", str(tmp_path / "o"), "--schedule", "cyclic")
    assert status == 2 and "--schedule 'cyclic' is not one of: cosine, linear, constant" in err
    status, _, err = run_cli(monkeypatch, capsys, "sft", str(tiny_config), str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o"))
    assert status == 2 and "missing.jsonl: no such file" in err
    with pytest.raises(UserError, match="missing.jsonl: no such file"):  # --debug lets the traceback through
        run_cli(monkeypatch, capsys, "--debug", "sft", str(tiny_config), str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o"))


def test_cosine_schedule_decays_to_a_tenth_of_the_peak(tmp_path, tiny_config, chat_records):
    data = write_jsonl(tmp_path / "d.jsonl", chat_records)
    sft(str(tiny_config), [str(data)], tmp_path / "o", max_steps=10, **{**FAST, "warmup": 2, "lr": 1e-3})
    lrs = [m["lr"] for m in metrics(tmp_path / "o")]
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(1e-4) and all(a >= b for a, b in zip(lrs[2:], lrs[3:]))


def test_sigkilled_process_resumes_to_the_uninterrupted_result(tmp_path, tiny_config, chat_records):
    import subprocess
    import sys
    import time

    data = write_jsonl(tmp_path / "d.jsonl", chat_records)
    out = tmp_path / "killed"
    options = {"max_steps": 150, "save_every": 10, "batch_size": 2, "lr": 3e-3, "warmup": 0, "device": "cpu", "max_length": 128}
    command = [sys.executable, "-m", "r1cli", "sft", str(tiny_config), str(data), "--out", str(out)]
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoints" / "step-000020" / "r1.json").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    process.kill()
    process.wait()
    assert not (out / "r1.json").exists()
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    sft(str(tiny_config), [str(data)], tmp_path / "whole", **options)
    killed, whole = weights(out), weights(tmp_path / "whole")
    assert max((killed[k] - whole[k]).abs().max().item() for k in whole) < 1e-5
    assert [m["step"] for m in metrics(out)] == list(range(1, 151))
